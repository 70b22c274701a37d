"""`tasklab explain TASK_ID`: why a task is in its state; `tasklab dead-letters-seen`.

The I/O half of explain: one snapshot of everything Redis (and, from stage 2, ZooKeeper) knows
about the task, read in a few bounded round trips; the sentences come from the pure
`common.domain.explanation.explain`. Direct mode only: it reads keys no API exposes (queues,
heartbeat keys, the fence, the checker's findings), so with TASKLAB_API_URL set it still needs
the Redis settings (and says so when Redis does not answer).
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated

import typer
from redis import Redis

from common import keys
from common.cli.shared import fail, settings
from common.domain.dispatch import entry_ref
from common.domain.explanation import Liveness, QueuePlace, TaskSnapshot, explain
from common.domain.task import Task, TaskType
from common.domain.transitions import TaskStatus

# How far into queue:pending explain looks for the task (from the end taken next): a queue
# longer than this answers "not among the next N" rather than reading it all.
MAX_QUEUE_SCAN = 10_000
PAGE = 500
ZK_TIMEOUT = 3.0


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def find_in_list(client: Redis, key: str, task_id: str, limit: int = MAX_QUEUE_SCAN):
    """(position counted from the end taken next, 1 = next; list length), or None.

    Messages go in on the left and are taken from the right, so the scan reads from the right,
    a page at a time, and stops at `limit` entries."""
    length = client.llen(key)
    scanned = 0
    while scanned < min(length, limit):
        stop = -1 - scanned
        page = client.lrange(key, stop - PAGE + 1, stop)
        if not page:
            break
        for offset, raw in enumerate(reversed(page)):
            if entry_ref(raw)[0] == task_id:
                return scanned + offset + 1, length
        scanned += len(page)
    return None


def _places(client: Redis, task: Task, agents: set[str]) -> list[QueuePlace]:
    places = []
    found = find_in_list(client, keys.PENDING_QUEUE, task.task_id)
    if found:
        places.append(QueuePlace("pending", *found))
    found = find_in_list(client, keys.SCHEDULING_QUEUE, task.task_id)
    if found:
        places.append(QueuePlace("scheduling", *found))
    if task.status == TaskStatus.PENDING:
        # A retry's message waits in the zset, scored by when it may run.
        for raw, score in client.zrange(keys.DELAYED_QUEUE, 0, MAX_QUEUE_SCAN - 1, withscores=True):
            if entry_ref(raw)[0] == task.task_id:
                places.append(
                    QueuePlace("delayed", 1, client.zcard(keys.DELAYED_QUEUE), None, score)
                )
                break
    for agent in sorted(agents):
        found = find_in_list(client, keys.agent_tasks(agent), task.task_id)
        if found:
            places.append(QueuePlace("inbox", *found, agent=agent))
        found = find_in_list(client, keys.processing(agent), task.task_id)
        if found:
            places.append(QueuePlace("processing", *found, agent=agent))
    return places


def _zookeeper(s) -> tuple[object | None, str | None]:
    """A short-lived ZooKeeper client when this installation has one (stage 2 on), else
    (None, why not)."""
    if s.stage < 2 and "TASKLAB_ZK_HOSTS" not in os.environ:
        return None, None
    from kazoo.client import KazooClient
    from kazoo.handlers.threading import KazooTimeoutError

    chroot = "/" + s.zk_chroot.strip("/") if s.zk_chroot.strip("/") else ""
    zk = KazooClient(hosts=s.zk_hosts + chroot, timeout=ZK_TIMEOUT)
    try:
        zk.start(timeout=ZK_TIMEOUT)
    except KazooTimeoutError:
        zk.close()
        return None, f"ZooKeeper at {s.zk_hosts} did not answer"
    return zk, None


def snapshot(client: Redis, task_id: str, zk=None, zk_note: str | None = None) -> TaskSnapshot:
    """Everything known about `task_id`; LookupError if there is no such task."""
    from common.adapters.redis_guarantees import RedisGuaranteeReader
    from common.adapters.redis_store import RedisTaskStore
    from common.client import TaskNotFound
    from common.coordination.paths import agent_node

    store = RedisTaskStore(client)
    task = store.get(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.task(task_id), "retriesUsed", "lostAttempts")
    pipe.get(keys.SCHEDULER_FENCE)
    pipe.hgetall(keys.TRANSITION_STATS)
    pipe.smembers(keys.AGENTS_SEEN)
    (retries_used, lost), fence, stats, seen = pipe.execute()

    owner = None
    if task.agent_id:
        ttl = client.pttl(keys.heartbeat(task.agent_id))
        registered = None
        if zk is not None:
            registered = zk.exists(agent_node(task.agent_id)) is not None
        owner = Liveness(task.agent_id, ttl / 1000 if ttl and ttl > 0 else None, registered)

    agents = {_s(a) for a in seen} | ({task.agent_id} if task.agent_id else set())
    parent_status = None
    if task.parent_id:
        raw = client.hget(keys.task(task.parent_id), "status")
        parent_status = _s(raw) if raw else ""
    findings, last_pass = RedisGuaranteeReader(client).findings_for(task_id)
    rejections = {
        _s(k).removeprefix("rejected_"): int(v)
        for k, v in stats.items()
        if _s(k).startswith("rejected_")
    }
    return TaskSnapshot(
        task=task,
        history=store.history(task_id),
        now=now,
        owner=owner,
        places=_places(client, task, agents),
        fence=int(fence) if fence is not None else None,
        retries_used=int(retries_used or 0),
        lost_attempts=int(lost or 0),
        max_lost_attempts=settings().max_lost_attempts,
        rejections=rejections,
        parent_status=parent_status,
        children=_children(client, task),
        findings=findings,
        checker_last_pass=last_pass,
        zookeeper=zk_note,
    )


def _children(client: Redis, task: Task) -> dict[str, int] | None:
    """A composite parent's children by status (None for any other task)."""
    if task.task_type != TaskType.COMPOSITE:
        return None
    ids = [_s(i) for i in client.lrange(keys.children(task.task_id), 0, -1)]
    pipe = client.pipeline(transaction=False)
    for child in ids:
        pipe.hget(keys.task(child), "status")
    counts: dict[str, int] = {}
    for status in pipe.execute() if ids else []:
        name = _s(status) if status is not None else "missing"
        counts[name] = counts.get(name, 0) + 1
    return counts


def explain_command(
    task_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for machines.")] = False,
) -> None:
    """Why a task is in its state, in plain sentences.

    Its place in the queue, its timeline, its agent's liveness, its epoch against the fence,
    the retries it has left, its parent, and the guarantee checker's findings. Reads Redis (and
    ZooKeeper from stage 2, or when TASKLAB_ZK_HOSTS is set) directly, also when
    TASKLAB_API_URL is set: no API exposes the queues and keys it reads.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from common.adapters.redis_client import redis_client
    from common.client import TaskNotFound

    s = settings()
    zk, note = _zookeeper(s)
    try:
        snap = snapshot(redis_client(s.redis_url), task_id, zk, note)
    except TaskNotFound as exc:
        fail(str(exc), 1)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        fail(f"cannot reach Redis at {s.redis_url} ({exc}); explain reads Redis directly", 1)
    finally:
        if zk is not None:
            zk.stop()
            zk.close()
    sentences = explain(snap)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "taskId": task_id,
                    "status": snap.task.status.value,
                    "sentences": [x.as_dict() for x in sentences],
                }
            )
        )
        return
    for sentence in sentences:
        typer.echo(sentence.text)


def dead_letters_seen_command() -> None:
    """Mark every dead letter now as looked at (the list; from stage 3 also the topic).

    The checker's tasklab_dead_letters_unseen drops to 0; newer dead letters count again.
    """
    from common.adapters.redis_client import redis_client
    from common.adapters.redis_guarantees import RedisGuaranteeReader

    s = settings()
    count, mark = RedisGuaranteeReader(redis_client(s.redis_url)).mark_dead_letters_seen()
    typer.echo(f"marked {count} new dead letter(s) as looked at (up to {mark:.3f})")
    if s.stage < 3 and "TASKLAB_KAFKA_BOOTSTRAP" not in os.environ:
        return
    # Stage 3 on: the dead-letter topic too, by committing the review group's offsets.
    from common.messaging.clients import Bus
    from common.messaging.dead_letter_review import KafkaDeadLetterReview

    review = KafkaDeadLetterReview(Bus.from_settings(s))
    try:
        new = review.mark_seen()
    finally:
        review.close()
    typer.echo(f"marked {new} new dead letter(s) on {review.topic} as looked at")
