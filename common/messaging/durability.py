"""When an effect in Redis is durable enough for the manager to commit the Kafka offset behind it.

The manager reads an event, applies it to Redis, and only then lets Kafka forget the event (the
offset commit). If Redis then loses the effect, nothing brings the event back: a SUCCESS lost
that way leaves its task RUNNING on an agent that has long finished it, and the agent, alive
and heartbeating, is never failed over. So an offset may be committed only once the effect
behind it would survive a Redis crash, and the way to know it depends on the server:

- `waitaof` (Redis >= 7.2): `WAITAOF 1 0 timeout` returns once everything this connection
  wrote is fsynced to the local AOF. One call per commit batch, not per message.
- `fsync-always` (`appendfsync always`): Redis fsyncs before it replies, so an acknowledged
  effect is already on disk; nothing to wait for.
- `fsync-everysec` (the default, and what Debian bookworm's Redis 7.0 offers without WAITAOF):
  no command forces or reports the fsync. Redis writes the AOF to the kernel before it
  replies, so a crash of the Redis *process* (kill -9, OOM kill) loses nothing acknowledged;
  a crash of the *host* loses what the kernel had not flushed, which a background fsync once a
  second bounds to about a second, two when the disk stalls (Redis then counts
  `aof_delayed_fsync`). The manager therefore commits an offset only once its effect is
  `EVERYSEC_HORIZON` seconds old, and holds every commit back for a horizon after Redis reports
  a delayed fsync or a failed AOF write. An argument from Redis's documented behaviour, not a
  proof: a disk that stalls without Redis noticing can still lose a second.
- `none` (no AOF): a crash loses everything since the last snapshot; no offset discipline
  helps. Said loudly at start-up.

Whatever the mode, a barrier can only vouch for the server it asks. If Redis restarted between
an effect and its barrier (a crash, then a restart from a shorter AOF), WAITAOF on the new
server says nothing about the old one's writes, and the horizon has not protected anything. So
every barrier also compares the server's `run_id` with the one it saw last; a different one
raises `RedisRestarted`, and the consumer reads again everything not committed yet.

`PendingOffsets` is the bookkeeping beside it: which offsets are handled, since when, and
which of them may be stored now. Pure, unit-tested in tests/unit/test_pending_offsets.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import ResponseError

from common import keys
from common.observability import get_logger

log = get_logger("tasklab.durability")

EVERYSEC_HORIZON = 2.0  # seconds: everysec fsyncs within one, two when the disk is busy


class RedisRestarted(Exception):
    """Redis restarted since the last barrier: effects applied since may be gone."""


class RedisDurability:
    """The barrier an offset commit waits for, in the mode the server allows.

    The mode is detected on first use (Redis may not answer yet when the manager starts), and
    the guarantee it gives is logged once, then.
    """

    def __init__(self, client: Redis, timeout_ms: int = 1000) -> None:
        self.client = client
        self.timeout_ms = timeout_ms
        self.mode: str | None = None
        self._delayed: int | None = None  # aof_delayed_fsync when last read
        self._run_id: str | None = None  # the server instance the last barrier asked
        self._trouble_at = float("-inf")  # when Redis last reported a late or failed write

    @property
    def horizon(self) -> float:
        """How old an effect must be before the barrier can vouch for it."""
        return EVERYSEC_HORIZON if self.detect() == "fsync-everysec" else 0.0

    def detect(self) -> str:
        """The mode, asked of the server once (raises RedisError while it does not answer)."""
        if self.mode is None:
            self.mode = self._ask_server()
            say = log.warning if self.mode == "none" else log.info
            say("durability (%s): %s", self.mode, self.guarantee())
        return self.mode

    def _ask_server(self) -> str:
        # The instance every later barrier is compared with (the manager asks at start-up,
        # before it applies anything).
        self._run_id = str(self.client.info("server").get("run_id", ""))
        if not int(self.client.info("persistence").get("aof_enabled", 0)):
            return "none"
        try:
            self.client.execute_command("WAITAOF", 1, 0, self.timeout_ms)
            return "waitaof"
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
        try:
            policy = self.client.config_get("appendfsync").get("appendfsync", "")
        except ResponseError:
            policy = ""  # CONFIG renamed away (managed Redis): assume the default
        return "fsync-always" if policy == "always" else "fsync-everysec"

    def guarantee(self) -> str:
        """One sentence for the start-up log: what a Redis crash after a commit can lose."""
        return {
            "waitaof": "offsets are committed after WAITAOF confirms the effects are fsynced "
            "to Redis's AOF: a Redis crash after a commit loses nothing applied",
            "fsync-always": "Redis fsyncs its AOF before replying (appendfsync always): a "
            "Redis crash after a commit loses nothing applied",
            "fsync-everysec": "this Redis has no WAITAOF; with appendfsync everysec offsets are "
            f"committed only for effects {EVERYSEC_HORIZON:.0f}s old and not while Redis reports "
            "a delayed fsync: a Redis process crash loses nothing applied, a host crash with a "
            "disk stalling unseen can lose about a second",
            "none": "Redis runs WITHOUT an AOF: a Redis crash loses every effect since its last "
            "snapshot, committed or not (run it with appendonly yes)",
        }[self.detect()]

    def durable(self, now: float) -> bool:
        """True when everything applied `horizon` seconds before `now` may be committed.

        Raises RedisRestarted when the server is not the one the previous call asked.
        """
        durable = self._barrier(now)
        # Asked after the barrier: the same run_id as last time means one server instance
        # saw every effect applied since, and the barrier above vouched for them.
        run_id = str(self.client.info("server").get("run_id", ""))
        previous, self._run_id = self._run_id, run_id
        if previous is not None and run_id != previous:
            self._delayed = None  # the new server counts its delayed fsyncs from zero
            raise RedisRestarted(f"Redis restarted (run_id {previous[:8]} -> {run_id[:8]})")
        return durable

    def _barrier(self, now: float) -> bool:
        if self.detect() == "waitaof":
            # WAITAOF waits for what *its connection* wrote; the manager's writes may have gone
            # through other connections of the pool. A write on this connection first raises
            # its offset past all of them (the AOF is one sequence), so the wait covers them.
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(keys.EVENT_STATS, "offset_barriers", 1)
            pipe.execute_command("WAITAOF", 1, 0, self.timeout_ms)
            _, (local, _replicas) = pipe.execute()
            return int(local) >= 1
        if self.mode == "fsync-everysec":
            info = self.client.info("persistence")
            delayed = int(info.get("aof_delayed_fsync", 0))
            if info.get("aof_last_write_status", "ok") != "ok" or (
                self._delayed is not None and delayed != self._delayed
            ):
                self._trouble_at = now
            self._delayed = delayed
            return now - self._trouble_at >= self.horizon
        return True


@dataclass
class _Snapshot:
    at: float
    offsets: dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


class PendingOffsets:
    """Handled offsets not stored yet, cut into snapshots so each can wait out a horizon."""

    def __init__(self) -> None:
        self._handled: dict[tuple[str, int], int] = {}
        self._snapshots: deque[_Snapshot] = deque()

    def handled(self, topic: str, partition: int, offset: int) -> None:
        self._handled[(topic, partition)] = offset + 1

    def cut(self, now: float) -> None:
        """Take a snapshot of what is handled now (called once per commit interval)."""
        if self._handled:
            self._snapshots.append(_Snapshot(now, self._handled))
            self._handled = {}

    def ready(self, cutoff: float) -> dict[tuple[str, int], int]:
        """The offsets to store once the barrier says everything applied by `cutoff` is
        durable: the newest position of every partition among snapshots taken by then."""
        out: dict[tuple[str, int], int] = {}
        for snapshot in self._snapshots:
            if snapshot.at > cutoff:
                break
            out.update(snapshot.offsets)
        return out

    def stored(self, cutoff: float) -> None:
        while self._snapshots and self._snapshots[0].at <= cutoff:
            self._snapshots.popleft()

    def drop(self, partitions: set[tuple[str, int]]) -> None:
        """Forget revoked partitions: their next owner re-reads from the last commit."""
        for key in partitions:
            self._handled.pop(key, None)
        for snapshot in self._snapshots:
            for key in partitions:
                snapshot.offsets.pop(key, None)

    def __bool__(self) -> bool:
        return bool(self._handled or any(s.offsets for s in self._snapshots))
