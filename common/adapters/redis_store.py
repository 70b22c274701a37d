"""RedisTaskStore: the task store on Redis, every transition one atomic Lua script."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_scripts import Scripts
from common.domain.idempotency import IdempotencyConflict, request_fingerprint
from common.domain.task import Task, TaskSpec
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.ports.task_store import CancelResult, TaskStore, TransitionResult


def as_result(raw: list) -> TransitionResult:
    return TransitionResult(bool(int(raw[0])), _s(raw[1]), _s(raw[2]), int(raw[3]))


class RedisTaskStore(TaskStore):
    def __init__(self, client: Redis) -> None:
        self.client = client
        self.scripts = Scripts(client)

    def submit(
        self,
        spec: TaskSpec,
        actor: str = "client",
        retry_of: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[Task, bool]:
        task = Task.new(spec, retry_of=retry_of, traceparent=traceparent)
        task_id, created, *conflict = self.scripts.submit(
            keys=[
                keys.task(task.task_id),
                keys.history(task.task_id),
                keys.PENDING_QUEUE,
                keys.TASK_INDEX,
                *keys.request_keys(spec.request_id),
            ],
            args=[
                task.task_id,
                json.dumps(task.to_hash()),
                task.to_message(),
                repr(task.created_at),
                actor,
                "1" if spec.request_id else "0",
                request_fingerprint(spec, retry_of),
            ],
        )
        if conflict:
            assert spec.request_id
            raise IdempotencyConflict(spec.request_id, _s(task_id))
        if not int(created):
            existing = self.get(_s(task_id))
            assert existing is not None
            return existing, False
        return task, True

    def get(self, task_id: str) -> Task | None:
        data = self.client.hgetall(keys.task(task_id))
        if not data:
            return None
        return task_from_reply(data)

    def history(self, task_id: str) -> list[dict]:
        return [json.loads(e) for e in self.client.lrange(keys.history(task_id), 0, -1)]

    def logs(self, task_id: str, start: int = 0) -> list[str]:
        return [_s(line) for line in self.client.lrange(keys.logs(task_id), start, -1)]

    def list_tasks(
        self, status: TaskStatus | None = None, offset: int = 0, limit: int = 50
    ) -> list[Task]:
        # Newest first. A status filter scans the index in pages: fine for a learning platform,
        # a per-status index would be the next step at scale.
        out: list[Task] = []
        skipped = 0
        page = 500
        cursor = 0
        while len(out) < limit:
            ids = self.client.zrevrange(keys.TASK_INDEX, cursor, cursor + page - 1)
            if not ids:
                break
            cursor += page
            pipe = self.client.pipeline(transaction=False)
            for tid in ids:
                pipe.hgetall(keys.task(_s(tid)))
            for data in pipe.execute():
                if not data:
                    continue
                task = task_from_reply(data)
                if status is not None and task.status != status:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(task)
                if len(out) >= limit:
                    break
        return out

    def transition(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        attempt: int,
        epoch: int = 0,
        actor: str,
        fields: Mapping[str, object] | None = None,
        clear: Iterable[str] = (),
        reason: str = "",
        fenced: bool = False,
        effects: list[dict] | None = None,
        effect_keys: Mapping[str, str] | None = None,
    ) -> TransitionResult:
        """Effects (list pushes/removals) run only if the transition is accepted.

        Each effect is {"op": ..., "key": a name in `effect_keys`, "v": value}: keys are
        passed by name, and `transition_keys` turns the names into KEYS positions.

        A final `to` written here is a decision of the platform, not an agent's report (those
        go through RedisOutcomeWriter and reach the archive on the bus): transition.lua also
        appends it to the archive's outbox, in the same step.
        """
        final = TaskStatus(to) in TERMINAL_STATES
        if final:
            effect_keys = {**(effect_keys or {}), "outbox": keys.ARCHIVE_OUTBOX}
        all_keys, effects = named_effects(task_id, effect_keys, effects)
        # The outbox key's KEYS position, and which path wrote the entry.
        outbox = all_keys.index(keys.ARCHIVE_OUTBOX) + 1 if final else 0
        arg = transition_arg(
            to,
            attempt=attempt,
            epoch=epoch,
            actor=actor,
            fields=fields,
            clear=clear,
            reason=reason,
            fenced=fenced,
            effects=effects,
            outbox=outbox,
            source="dispatch",
        )
        return as_result(self.scripts.transition(keys=all_keys, args=[arg]))

    def cancel(self, task_id: str, actor: str = "client") -> CancelResult:
        accepted, reason, status, attempt, cancelled_from = self.scripts.cancel(
            keys=[
                keys.task(task_id),
                keys.history(task_id),
                keys.TRANSITION_STATS,
                keys.ARCHIVE_OUTBOX,
            ],
            args=[actor, repr(time.time())],
        )
        return CancelResult(
            bool(int(accepted)), _s(reason), _s(status), int(attempt), _s(cancelled_from)
        )

    def stats(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.client.hgetall(keys.TRANSITION_STATS).items()}


def transition_keys(task_id: str) -> list[str]:
    """KEYS[1..4] of transition.lua (and of scripts that embed a transition)."""
    return [keys.task(task_id), keys.history(task_id), keys.TRANSITION_STATS, keys.SCHEDULER_FENCE]


def named_effects(
    task_id: str, effect_keys: Mapping[str, str] | None, effects: list[dict] | None
) -> tuple[list[str], list[dict]]:
    """KEYS for a transition with effects, and the effects with each key name resolved to its
    KEYS position: callers name keys ("processing", "logs"), never count positions."""
    all_keys = transition_keys(task_id)
    position: dict[str, int] = {}
    for name, key in (effect_keys or {}).items():
        all_keys.append(key)
        position[name] = len(all_keys)  # Lua counts KEYS from 1
    resolved = []
    for effect in effects or []:
        effect = dict(effect)
        name = effect.pop("key")
        if name not in position:
            raise ValueError(f"effect names key {name!r}, which effect_keys does not give")
        resolved.append({**effect, "k": position[name]})
    return all_keys, resolved


def transition_arg(
    to: TaskStatus,
    *,
    attempt: int,
    epoch: int = 0,
    actor: str,
    fields: Mapping[str, object] | None = None,
    clear: Iterable[str] = (),
    reason: str = "",
    fenced: bool = False,
    effects: list[dict] | None = None,
    outbox: int = 0,
    source: str = "",
) -> str:
    """ARGV[1] of transition.lua: the whole request as one JSON object. `outbox`: the KEYS
    position of archive:outbox for a final state no agent reports (0: none), and `source`
    the path its entry names."""
    outboxed = {"outbox": outbox, "source": source} if outbox else {}
    return _encode(
        {
            "to": TaskStatus(to).value,
            "attempt": attempt,
            "epoch": epoch,
            "actor": actor,
            "now": repr(time.time()),
            "fields": {k: str(v) for k, v in (fields or {}).items()},
            "clear": list(clear),
            "reason": reason,
            "fenced": fenced,
            "effects": effects or [],
            **outboxed,
        }
    )


def _encode(obj: object) -> str:
    # cjson decodes an empty JSON array and an empty object alike; drop empty containers so
    # the Lua side sees nil instead of a wrongly typed table.
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if v not in ({}, [])}
    return json.dumps(obj)


def task_from_reply(data: dict) -> Task:
    """A task from the HGETALL reply of its hash (bytes that are not UTF-8 kept, see as_text)."""
    return Task.from_hash({_s(k): _s(v) for k, v in data.items()})
