"""Every Redis key name tasklab uses, in one place: a contract (docs/reference/redis-keys.md).

A learner can type any of these into `redis-cli`; a test can rely on them.
"""

PENDING_QUEUE = "queue:pending"
DELAYED_QUEUE = "queue:delayed"  # zset: score = when a retried task may run again
SCHEDULING_QUEUE = "queue:scheduling"  # stage 2: messages the leader took but has not dispatched
DEAD_LETTER = "queue:dead-letter"  # capped at dead_letter_max entries, newest first
DEAD_LETTER_STATS = "stats:dead-letter"  # hash: `dropped` = entries trimmed off by the cap
TASK_INDEX = "tasks:index"  # zset: score = createdAt, for listing newest first
TRANSITION_STATS = "stats:transitions"  # hash: accepted / rejected_* counters
SCHEDULER_FENCE = "fence:scheduler"  # highest leader epoch ever seen (stage 2)
# Stage 3: at most one token, pushed when an agent takes an entry off its inbox; a leader whose
# agents' inboxes were all full waits on it (BLPOP) instead of looking again and again.
INBOX_ROOM = "scheduler:room"
AGENTS_SEEN = "agents:seen"  # every agent id that heartbeated and was not reaped since
EVENT_STATS = "stats:events"  # hash: what the stage 3 manager did with each event it read
# Set: the ids of composite parents not final yet, which the scheduler leader's coordinator
# ticks (common/scheduling/composite.py); a parent leaves it when it finishes or is cancelled.
COMPOSITES_ACTIVE = "composites:active"
CHECKER_FINDINGS = "checker:findings"  # hash: taskId -> JSON of the checker's latest findings
CHECKER_LAST_PASS = "checker:last-pass"  # when the leading checker last published (Unix time)
# Field of DEAD_LETTER_STATS: the `at` of the newest dead letter an operator marked as looked at.
DEAD_LETTER_SEEN_FIELD = "seenAt"


def dead_letter_requeued(entry_id: str) -> str:
    """String, with a TTL: the dead-letter entry `entry_id` was requeued (a repeat is a no-op)."""
    return f"dead-letter:requeued:{entry_id}"


def task(task_id: str) -> str:
    return f"task:{task_id}"


def history(task_id: str) -> str:
    return f"task:{task_id}:history"


def logs(task_id: str) -> str:
    return f"task:{task_id}:logs"


def children(parent_id: str) -> str:
    """List: a composite parent's child ids in their listed order (GROUP, SHARDS or DAG order;
    MAP_REDUCE's map step, then the items `expand` adds), a reduce step always last."""
    return f"task:{parent_id}:children"


def request(request_id: str) -> str:
    return f"request:{request_id}"


def request_fingerprint(request_id: str) -> str:
    """Hash {taskId, fingerprint}: what the request that created `request:{id}` asked for.

    A prefix of its own, not `request:{id}:...`: a client chooses the id, and the request key
    of an id ending in ":fingerprint" must never be another id's fingerprint key."""
    return f"request-fingerprint:{request_id}"


def request_keys(request_id: str | None) -> tuple[str, str]:
    """`request:{id}` and its fingerprint key, as the scripts that claim a request take them.
    Without an id, a placeholder pair: a script's KEYS are fixed in number, and `claim_request`
    never touches them when ARGV carries no id."""
    rid = request_id or "-"
    return request(rid), request_fingerprint(rid)


def agent_tasks(agent_id: str) -> str:
    return f"agent:{agent_id}:tasks"


def processing(agent_id: str) -> str:
    return f"processing:{agent_id}"


def heartbeat(agent_id: str) -> str:
    return f"agent:{agent_id}:heartbeat"


def incarnation(agent_id: str) -> str:
    """Counter bumped at each start of the agent: a failover refuses to reap a newer run."""
    return f"agent:{agent_id}:incarnation"


def log_cursor(task_id: str) -> str:
    """Hash: attempt -> sequence number of the last log line appended (stage 3 dedupe)."""
    return f"task:{task_id}:logs:seq"


def rate_limit(principal: str) -> str:
    """Hash (tokens, at): the caller's token bucket, shared by every API replica (stage 4).
    `principal` is a key's fingerprint or a token's subject, never a key."""
    return f"ratelimit:{principal}"


# -- cron schedules (common/domain/schedule.py, stage 2 on) --------------------------------------
# Zset: schedule name -> when the leader's firer looks at it next (Unix time).
SCHEDULES_DUE = "schedules:due"
# Hash: fired / already / suspended / rejected_stale_epoch / too_many_missed counters.
SCHEDULE_STATS = "stats:schedules"


def schedule(name: str) -> str:
    """Hash: a schedule's document (`spec`), `uid`, `suspend`, `lastScheduleTime`, ..."""
    return f"schedule:{name}"


def schedule_active(name: str) -> str:
    """Zset: the schedule's runs not seen final yet, score = the fire time each belongs to."""
    return f"schedule:{name}:active"


def schedule_history(name: str, succeeded: bool) -> str:
    """Zset: the schedule's finished runs kept (successful or failed), score = fire time."""
    return f"schedule:{name}:{'succeeded' if succeeded else 'failed'}"


# -- the archive (stage 5, common/archive/outbox.py) ---------------------------------------------
# Stream: final states that no agent reported (a cancel, a failover giving up, a composite's
# parent and its skipped or cancelled children), each appended by the script that made it, in
# the same step. Only while the stream exists: the archiver creates it with its consumer group
# (XGROUP CREATE ... MKSTREAM), and deletes each entry once its row is in PostgreSQL.
ARCHIVE_OUTBOX = "archive:outbox"
