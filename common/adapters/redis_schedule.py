"""RedisScheduleStore: cron schedules on Redis (the ScheduleStore port).

A schedule is a hash `schedule:{name}` (its document as JSON in `spec`, its `uid`, `suspend`,
`lastScheduleTime`, ...), its place in the zset `schedules:due` (score = when the leader's
firer looks at it next), its runs not seen final in `schedule:{name}:active` and the finished
ones it keeps in `schedule:{name}:succeeded` / `:failed` (scores = the fire time each run
belongs to). A run is an ordinary task (`task:{id}`), with `scheduleId` and `scheduledFor`.

The firer's write is one script, schedule_sync.lua: fenced with the leader's epoch, and
keyed by the fire time (`lastScheduleTime` must be older), so that a fire time fires at most
once across leaders. Every key it touches is in KEYS, the runs it deletes included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_scripts import script_source
from common.domain.schedule import Run, ScheduleSpec
from common.ports.schedule import (
    ScheduleExists,
    ScheduleState,
    ScheduleStore,
    Sync,
    SyncResult,
)

# Listing reads this many schedules per round trip.
_PAGE = 200


def _opt_float(value: object) -> float | None:
    return None if value is None else float(_s(value))


class RedisScheduleStore(ScheduleStore):
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._sync = client.register_script(script_source("schedule_sync"))
        self._create = client.register_script(script_source("schedule_create"))
        self._suspend = client.register_script(script_source("schedule_suspend"))

    # -- clients ----------------------------------------------------------------------------
    def create(self, spec: ScheduleSpec, now: float, next_check: float) -> ScheduleState:
        uid = str(uuid.uuid4())
        fields = {
            "name": spec.name,
            "uid": uid,
            "spec": spec.model_dump_json(by_alias=True, exclude={"suspend"}),
            "suspend": "1" if spec.suspend else "0",
            "createdAt": repr(now),
            "updatedAt": repr(now),
        }
        created = self._create(
            keys=[keys.schedule(spec.name), keys.SCHEDULES_DUE],
            args=[spec.name, json.dumps(fields), repr(next_check)],
        )
        if not int(created):
            raise ScheduleExists(spec.name)
        state = self.get(spec.name)
        assert state is not None
        return state

    def get(self, name: str) -> ScheduleState | None:
        return self._read([name]).get(name)

    def list(self) -> list[ScheduleState]:
        # Every schedule is in the due set from its creation to its deletion (a valid
        # expression always fires again), so the set is the index too: no SCAN of the keyspace.
        names = sorted(_s(n) for n in self.client.zrange(keys.SCHEDULES_DUE, 0, -1))
        states = self._read(names)
        return [states[n] for n in names if n in states]

    def set_suspend(self, name: str, suspend: bool, now: float) -> ScheduleState | None:
        done = self._suspend(
            keys=[keys.schedule(name), keys.SCHEDULES_DUE],
            args=[name, "1" if suspend else "0", repr(now)],
        )
        return self.get(name) if int(done) else None

    def delete(self, name: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.schedule(name))
        pipe.delete(keys.schedule_active(name))
        pipe.delete(keys.schedule_history(name, True), keys.schedule_history(name, False))
        pipe.zrem(keys.SCHEDULES_DUE, name)
        return bool(pipe.execute()[0])

    def _read(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        out: dict[str, ScheduleState] = {}
        for start in range(0, len(names), _PAGE):
            page = names[start : start + _PAGE]
            pipe = self.client.pipeline(transaction=False)
            for name in page:
                pipe.hgetall(keys.schedule(name))
                pipe.zrange(keys.schedule_active(name), 0, -1, withscores=True)
                pipe.zrevrange(keys.schedule_history(name, True), 0, -1, withscores=True)
                pipe.zrevrange(keys.schedule_history(name, False), 0, -1, withscores=True)
                pipe.zscore(keys.SCHEDULES_DUE, name)
            raw = pipe.execute()
            for i, name in enumerate(page):
                data, active, ok, failed, score = raw[5 * i : 5 * i + 5]
                h = {_s(k): _s(v) for k, v in data.items()}
                if "uid" not in h:
                    continue
                spec = ScheduleSpec.model_validate_json(h["spec"]).model_copy(
                    update={"suspend": h.get("suspend") == "1"}
                )
                out[name] = ScheduleState(
                    spec=spec,
                    uid=h["uid"],
                    created_at=float(h["createdAt"]),
                    updated_at=float(h.get("updatedAt", h["createdAt"])),
                    last_schedule_time=_opt_float(h.get("lastScheduleTime")),
                    last_run_id=h.get("lastRunId"),
                    last_missed=int(h.get("lastMissed", 0)),
                    last_skip=h.get("lastSkip"),
                    next_check=_opt_float(score),
                    active=tuple(Run(_s(r), float(at)) for r, at in active),
                    succeeded=tuple(Run(_s(r), float(at)) for r, at in ok),
                    failed=tuple(Run(_s(r), float(at)) for r, at in failed),
                )
        return out

    # -- the firer --------------------------------------------------------------------------
    def due(self, now: float, limit: int) -> list[str]:
        return [_s(n) for n in self.client.zrangebyscore(keys.SCHEDULES_DUE, "-inf", now, 0, limit)]

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        pipe = self.client.pipeline(transaction=False)
        for run in run_ids:
            pipe.hget(keys.task(run), "status")
        return {r: _s(s) for r, s in zip(run_ids, pipe.execute(), strict=True) if s is not None}

    def sync(self, name: str, write: Sync, epoch: int, actor: str, now: float) -> SyncResult:
        run = write.fire
        run_id = run.task_id if run is not None else "-"
        deleted = [k for r in write.delete for k in (keys.task(r), keys.history(r), keys.logs(r))]
        accepted, outcome = self._sync(
            keys=[
                keys.schedule(name),
                keys.SCHEDULES_DUE,
                keys.schedule_active(name),
                keys.schedule_history(name, True),
                keys.schedule_history(name, False),
                keys.SCHEDULER_FENCE,
                keys.SCHEDULE_STATS,
                keys.task(run_id),
                keys.history(run_id),
                keys.TASK_INDEX,
                keys.PENDING_QUEUE,
                *deleted,
            ],
            args=[
                name,
                write.uid,
                epoch,
                repr(now),
                actor,
                repr(write.next_check),
                "" if write.fire_at is None or run is None else repr(write.fire_at),
                run_id,
                json.dumps(run.to_hash()) if run is not None else "{}",
                run.to_message() if run is not None else "",
                write.missed,
                write.skip,
                len(write.finished),
                *[a for f in write.finished for a in (f.run_id, f.outcome)],
                *write.delete,
            ],
        )
        return SyncResult(bool(int(accepted)), _s(outcome))
