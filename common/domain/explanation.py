"""Why a task is in its state, in plain sentences: the reasoning behind `tasklab explain`.

A pure function over a snapshot of everything the store knows about one task (its record, its
history, its owner's liveness, its place in the queues, the fence, the checker's findings).
The CLI's adapter (common/cli/explain.py) gathers the snapshot; this module decides what it
means, so each sentence kind is unit-tested without a service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from common.domain.task import Task, TaskType
from common.domain.transitions import TERMINAL_STATES, TaskStatus

S = TaskStatus


@dataclass(frozen=True)
class QueuePlace:
    """Where a message of the task sits. `position` is 1 for the next one to be taken."""

    queue: str  # pending | scheduling | delayed | inbox | processing
    position: int
    length: int
    agent: str | None = None  # the agent of an inbox or a processing list
    due_at: float | None = None  # queue:delayed: when the retry may run


@dataclass(frozen=True)
class Liveness:
    agent_id: str
    heartbeat_ttl: float | None  # seconds left on agent:{id}:heartbeat; None = no key
    registered: bool | None  # /live-agents/{id} exists; None = ZooKeeper not asked

    @property
    def live(self) -> bool:
        # ZooKeeper is the judge where it is asked (stage 2 on); else the heartbeat key.
        return self.registered if self.registered is not None else self.heartbeat_ttl is not None


@dataclass(frozen=True)
class TaskSnapshot:
    task: Task
    history: Sequence[Mapping[str, object]]
    now: float
    owner: Liveness | None = None
    places: Sequence[QueuePlace] = ()
    fence: int | None = None  # fence:scheduler; None = absent (stage 1)
    retries_used: int = 0
    lost_attempts: int = 0
    max_lost_attempts: int = 3
    rejections: Mapping[str, int] = field(default_factory=dict)  # stats:transitions rejected_*
    parent_status: str | None = None  # for a child: its parent's status ("" = parent gone)
    children: Mapping[str, int] | None = None  # for a parent: its children by status
    findings: Sequence[Mapping[str, object]] = ()  # the checker's, for this task
    checker_last_pass: float | None = None  # when a checker last published; None = never
    zookeeper: str | None = None  # why ZooKeeper was not asked, if it was meant to be


@dataclass(frozen=True)
class Sentence:
    kind: str  # state | queue | timeline | owner | epoch | retries | lost | fenced | parent
    #            | children | checker
    text: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def clock(ts: float | None) -> str:
    if not ts:
        return "-"
    millis = int(float(ts) * 1000 + 1e-3)
    return time.strftime("%H:%M:%S", time.localtime(millis // 1000)) + f".{millis % 1000:03d}"


def _ago(now: float, ts: float) -> str:
    return f"{max(0.0, now - ts):.0f}s"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def explain(snap: TaskSnapshot) -> list[Sentence]:
    """Every sentence about the task, most important first: its state and why, where it
    waits, what happened, who runs it, what guards it, what the checker says."""
    out = [Sentence("state", _state(snap))]
    out.extend(Sentence("queue", q) for q in _queue(snap))
    out.extend(Sentence("timeline", t) for t in _timeline(snap))
    owner = _owner(snap)
    if owner:
        out.append(Sentence("owner", owner))
    out.append(Sentence("epoch", _epoch(snap)))
    out.append(Sentence("retries", _retries(snap)))
    if snap.lost_attempts:
        out.append(
            Sentence(
                "lost",
                f"{snap.lost_attempts} of its attempts were lost with their agent (it ends "
                f"FAILED at {snap.max_lost_attempts} such losses).",
            )
        )
    out.append(Sentence("fenced", _fenced(snap)))
    parent = _parent(snap)
    if parent:
        out.append(Sentence("parent", parent))
    if snap.children is not None:
        out.append(Sentence("children", _children(snap.children)))
    out.append(Sentence("checker", _checker(snap)))
    return out


def _state(snap: TaskSnapshot) -> str:
    t, now = snap.task, snap.now
    since = f"since {clock(t.updated_at)} ({_ago(now, t.updated_at)})"
    status = t.status
    if t.task_type == TaskType.COMPOSITE and status not in TERMINAL_STATES:
        return _composite_state(snap, since)
    if status == S.WAITING:
        return (
            f"It is WAITING {since}: a child of composite {t.parent_id}, held back until its "
            "parent releases it (its upstream tasks finish, or its parallelism allows)."
        )
    if status == S.PENDING:
        if any(p.queue == "delayed" for p in snap.places):
            return f"It is PENDING {since}: a retry waiting out its backoff."
        if t.attempt > 1:
            return f"It is PENDING {since}, for attempt {t.attempt}: queued to run again."
        return f"It is PENDING {since}: queued, not yet taken by a scheduler or an agent."
    if status == S.SCHEDULED:
        return (
            f"It is SCHEDULED {since}: the leading scheduler (epoch {t.epoch}) took it and has "
            "not placed it on an agent yet."
        )
    if status == S.DISPATCHED:
        return (
            f"It is DISPATCHED {since}: placed on agent {t.agent_id}, which has not started it yet."
        )
    if status == S.RUNNING:
        ran = now - t.updated_at
        left = t.execution_timeout - ran
        timing = (
            f"{left:.0f}s before its {t.execution_timeout}s timeout"
            if left >= 0
            else f"{-left:.0f}s past its {t.execution_timeout}s timeout"
        )
        return f"It is RUNNING on agent {t.agent_id} {since}, attempt {t.attempt}: {timing}."
    if status in TERMINAL_STATES:
        detail = []
        if t.exit_code is not None:
            detail.append(f"exit code {t.exit_code}")
        if t.error:
            detail.append(f"error: {t.error}")
        reason = _last_reason(snap)
        if reason and not t.error:
            detail.append(reason)
        tail = f" ({'; '.join(detail)})" if detail else ""
        return (
            f"It is {status.value}, final, since {clock(t.updated_at)}, after "
            f"{t.attempt} attempt(s){tail}."
        )
    return f"It is {status.value} {since}."


def _composite_state(snap: TaskSnapshot, since: str) -> str:
    t = snap.task
    if t.status == S.PENDING:
        sentence = (
            f"It is PENDING {since}: a composite task, which the leading scheduler's coordinator "
            "starts (stage 2 on); a composite runs on no agent and sits on no queue."
        )
        if snap.fence is None:
            sentence += (
                " No scheduler has led on this Redis yet (fence:scheduler holds no epoch): it "
                "starts once one does (stage 1 runs no coordinator)."
            )
        return sentence
    return (
        f"It is {t.status.value} {since}: a composite task, coordinated by the leading "
        f"scheduler (epoch {t.epoch}); it ends when its children's outcome decides it."
    )


def _last_reason(snap: TaskSnapshot) -> str:
    for entry in reversed(snap.history):
        if entry.get("reason"):
            return str(entry["reason"])
    return ""


def _queue(snap: TaskSnapshot) -> list[str]:
    t = snap.task
    sentences = []
    for p in snap.places:
        if p.queue == "pending":
            ahead = p.position - 1
            sentences.append(
                f"It is {_ordinal(p.position)} of {p.length} in queue:pending: "
                + (f"{ahead} message(s) will be taken before it." if ahead else "next to go.")
            )
        elif p.queue == "delayed":
            when = (
                f"at {clock(p.due_at)} (in {max(0.0, (p.due_at or 0) - snap.now):.0f}s)"
                if p.due_at
                else "when its backoff ends"
            )
            sentences.append(f"It is in queue:delayed, back on queue:pending {when}.")
        elif p.queue == "scheduling":
            sentences.append(
                "Its message is on queue:scheduling: a leader took it and has not placed it; if "
                "that leader died, the next one's recovery sweep gives it back."
            )
        elif p.queue == "inbox":
            sentences.append(
                f"It is {_ordinal(p.position)} of {p.length} in agent {p.agent}'s inbox "
                f"(agent:{p.agent}:tasks)."
            )
        elif p.queue == "processing":
            sentences.append(f"Agent {p.agent} holds it on processing:{p.agent} (taken to run).")
    if (
        not snap.places
        and t.status in (S.PENDING, S.SCHEDULED, S.DISPATCHED)
        and t.task_type != TaskType.COMPOSITE
    ):
        sentences.append(
            f"Its message is on no queue while it is {t.status.value}: only a recovery sweep "
            "or a failover can move it on; the checker counts it as stuck past its deadline."
        )
    holders = {p.agent for p in snap.places if p.queue == "processing" and p.agent}
    if len(holders) > 1:
        sentences.append(
            f"{len(holders)} agents hold it at once ({', '.join(sorted(holders))}): "
            "more than one live attempt."
        )
    return sentences


def _timeline(snap: TaskSnapshot) -> list[str]:
    out = []
    for h in snap.history:
        reason = f": {h['reason']}" if h.get("reason") else ""
        origin = f" from {h['from']}" if h.get("from") else ""
        out.append(
            f"At {clock(h.get('at'))} it became {h.get('state')}{origin} (attempt "  # type: ignore[arg-type]
            f"{h.get('attempt', 1)}, epoch {h.get('epoch', 0)}) by {h.get('actor', '?')}{reason}."
        )
    if not out:
        out.append("It has no history (written by hand, or its history expired).")
    return out


def _owner(snap: TaskSnapshot) -> str | None:
    t, owner = snap.task, snap.owner
    if owner is None or t.status not in (S.RUNNING, S.DISPATCHED):
        return None
    beat = (
        f"heartbeat key expires in {owner.heartbeat_ttl:.1f}s"
        if owner.heartbeat_ttl is not None
        else "no heartbeat key"
    )
    zk = {
        True: f"registered in ZooKeeper (/live-agents/{owner.agent_id})",
        False: f"not registered in ZooKeeper (no /live-agents/{owner.agent_id})",
        None: "ZooKeeper not asked" + (f" ({snap.zookeeper})" if snap.zookeeper else ""),
    }[owner.registered]
    if owner.live:
        return f"Its agent {owner.agent_id} is live: {zk}, {beat}."
    then = (
        "the leader's failover gives it back to queue:pending with attempt + 1"
        if owner.registered is not None
        else "a reaper gives it back to queue:pending with attempt + 1"
    )
    return f"Its agent {owner.agent_id} is not live: {zk}, {beat}; {then}."


def _epoch(snap: TaskSnapshot) -> str:
    t = snap.task
    if snap.fence is None:
        return (
            f"Its epoch is {t.epoch} and there is no fence:scheduler (no scheduler has led): "
            f"its writes are fenced by attempt only (attempt {t.attempt})."
        )
    if t.epoch < snap.fence:
        return (
            f"It was last written at epoch {t.epoch}; fence:scheduler is {snap.fence}, so a "
            f"leader's write for it must carry epoch {snap.fence} or more, and any write with "
            f"an attempt other than {t.attempt} is refused."
        )
    return (
        f"It was last written at epoch {t.epoch}, the current fence:scheduler: writes with an "
        f"older epoch or an attempt other than {t.attempt} are refused."
    )


def _retries(snap: TaskSnapshot) -> str:
    t = snap.task
    if t.retry_count == 0:
        return "It has no automatic retries (retryCount 0): a failure is final."
    left = max(0, t.retry_count - snap.retries_used)
    return (
        f"It may retry {t.retry_count} time(s) automatically; {snap.retries_used} used, "
        f"{left} left."
    )


def _fenced(snap: TaskSnapshot) -> str:
    stale = snap.rejections
    total = sum(stale.values())
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stale.items()) if v) or "none"
    return (
        "Refused writes are counted for the whole platform, not per task "
        f"(stats:transitions: {counts}; {total} in all), so which of them were for this task "
        "cannot be known; its history holds only the writes that were accepted."
    )


def _parent(snap: TaskSnapshot) -> str | None:
    t = snap.task
    if not t.parent_id:
        return None
    what = t.role or "child"
    index = ""
    if t.shard_index is not None and t.shard_total is not None:
        index = f" {t.shard_index + 1} of {t.shard_total}"
    if t.node:
        index += f" (node {t.node})"
    state = (
        f", which is {snap.parent_status}"
        if snap.parent_status
        else ", which no longer exists"
        if snap.parent_status == ""
        else ""
    )
    return f"It is {what}{index} of composite task {t.parent_id}{state}."


def _children(children: Mapping[str, int]) -> str:
    total = sum(children.values())
    done = sum(n for s, n in children.items() if s in {x.value for x in TERMINAL_STATES})
    parts = ", ".join(f"{n} {s}" for s, n in sorted(children.items()))
    return f"Its {total} children: {parts} ({done} of {total} finished)."


def _checker(snap: TaskSnapshot) -> str:
    if snap.checker_last_pass is None:
        return "No guarantee checker has run (`tasklab run checker`), so no finding is recorded."
    ago = _ago(snap.now, snap.checker_last_pass)
    if not snap.findings:
        return f"The checker's last pass ({ago} ago) found nothing wrong with it."
    found = "; ".join(f"{f.get('check')}: {f.get('detail')}" for f in snap.findings)
    return f"The checker's last pass ({ago} ago) found a broken guarantee: {found}."
