"""Every Prometheus metric tasklab exports, defined once: name, kind, labels, help, who serves it.

Pattern: Observer (introduced in stage 5). The roles do not report to a monitoring system;
they update counters in their own memory, and Prometheus pulls them (`GET /metrics`) when it
wants them. A role never waits on its monitoring, and a Prometheus that is down costs nothing.

Two kinds of family:
- **events** counted by the process in which they happen (a task started by *this* agent, a
  dead letter written by *this* manager): prometheus_client Counters and Histograms, updated by
  a line in the role's code. Summed across processes by the query (`sum by (type) (...)`).
- **state** read when Prometheus scrapes, by a collector that asks the object or the store that
  holds it (an agent's slots, the scheduler's term, the length of `queue:pending`): nothing can
  drift, because nothing is copied. The cluster-wide readings from Redis are the same on every
  process that serves them: aggregate those with `max`, not `sum`.

Naming follows Prometheus's conventions: the `tasklab_` prefix, base units (`_seconds`),
`_total` on counters, and bounded label values only (a task type, a final status, a reason
category, a queue, an agent): never a task id, never an error text, which would make one time
series per task. `docs/reference/metrics.md` is generated from FAMILIES (tools/metricsdocs.py).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.domain.task import TaskType

Kind = Literal["counter", "gauge", "histogram"]

# No `_created` series beside every counter and histogram: they double the series a scrape
# carries, and Prometheus's text-format scrape does not use them.
disable_created_metrics()

# Task run times span milliseconds (an echo) to a day (executionTimeout's limit).
RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
# Waiting in a queue: milliseconds when agents are idle, minutes under a backlog.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# A request to the API or a provider; a Watch or a log follow lasts as long as its task.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


@dataclass(frozen=True)
class Family:
    """One metric family as it appears on `/metrics` (the exposition name, `_total` included)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    served_by: tuple[str, ...] = ()  # the roles whose /metrics carry it
    section: str = ""
    buckets: tuple[float, ...] = ()
    collected: bool = False  # read at scrape time by a collector, not updated in place

    def __post_init__(self) -> None:
        if not self.name.startswith("tasklab_"):
            raise ValueError(f"{self.name}: every tasklab metric starts with tasklab_")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")

    @property
    def base(self) -> str:
        """The name prometheus_client takes (it adds `_total` to a counter itself)."""
        return self.name.removesuffix("_total")

    def counter_family(self, labels: Sequence[str] | None = None) -> CounterMetricFamily:
        return CounterMetricFamily(self.base, self.help, labels=self._labels(labels))

    def gauge_family(self, labels: Sequence[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=self._labels(labels))

    def _labels(self, labels: Sequence[str] | None) -> list[str]:
        return list(self.labels if labels is None else labels)


FAMILIES: list[Family] = []


def family(
    name: str,
    kind: Kind,
    help: str,  # noqa: A002 - Prometheus's own word for it
    labels: Iterable[str] = (),
    *,
    served_by: Iterable[str],
    section: str,
    buckets: Iterable[float] = (),
    collected: bool = False,
) -> Family:
    spec = Family(
        name, kind, help, tuple(labels), tuple(served_by), section, tuple(buckets), collected
    )
    if any(f.name == spec.name for f in FAMILIES):
        raise ValueError(f"metric family {spec.name} defined twice")
    FAMILIES.append(spec)
    return spec


def _counter(
    spec: Family,
    known: Mapping[str, Iterable[str]] | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> Counter:
    """The family's counter, with a series at 0 for every combination of `known` label values.

    A labelled counter has no series until its first `.labels(...).inc()`, and that first
    series is born at 1: `rate()` and `increase()` need two samples, so the first failure of a
    type, the first dead letter of a reason or the first failover would be invisible to them,
    and to every alert built on them. Series that exist at 0 from the process's start are seen
    going 0 -> 1. Only bounded, known values are listed (task types, final statuses, reason
    categories), so the series count stays fixed.
    """
    counter = Counter(spec.base, spec.help, spec.labels, registry=registry)
    if known:
        if set(known) != set(spec.labels):
            raise ValueError(f"{spec.name}: known values for {sorted(known)}, labels {spec.labels}")
        for values in itertools.product(*(tuple(known[label]) for label in spec.labels)):
            counter.labels(*values)
    return counter


def _histogram(spec: Family) -> Histogram:
    return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets)


WRITER = ("agent (stages 1-2)", "manager (stage 3 on)")

# -- tasks ------------------------------------------------------------------------------------
TASK = "Tasks"
F_SUBMITTED = family(
    "tasklab_tasks_submitted_total",
    "counter",
    "Tasks created by a submission this process accepted (a repeated requestId is not counted).",
    ["type"],
    served_by=["rpc"],
    section=TASK,
)
F_STARTED = family(
    "tasklab_tasks_started_total",
    "counter",
    "Attempts this agent started running.",
    ["type"],
    served_by=["agent"],
    section=TASK,
)
F_FINISHED = family(
    "tasklab_tasks_finished_total",
    "counter",
    "Tasks this process moved to a final status: SUCCESS or FAILED by writing an attempt's "
    "outcome, CANCELLED by an accepted cancel.",
    ["type", "status"],
    served_by=(*WRITER, "rpc (CANCELLED)"),
    section=TASK,
)
F_RETRIES = family(
    "tasklab_task_retries_total",
    "counter",
    "Failed attempts sent back to the queue for an automatic retry, with a backoff.",
    ["type"],
    served_by=WRITER,
    section=TASK,
)
F_RUN = family(
    "tasklab_task_run_seconds",
    "histogram",
    "How long an attempt ran on this agent, by how it ended "
    "(success, failed, timed_out, cancelled, superseded).",
    ["type", "outcome"],
    served_by=["agent"],
    section=TASK,
    buckets=RUN_BUCKETS,
)
F_SCHEDULE_TO_START = family(
    "tasklab_task_schedule_to_start_seconds",
    "histogram",
    "From a task's creation to the start of its first attempt: time spent waiting in queues.",
    ["type"],
    served_by=WRITER,
    section=TASK,
    buckets=WAIT_BUCKETS,
)
F_DEAD_LETTERS = family(
    "tasklab_dead_letters_total",
    "counter",
    "Messages this process moved to a dead-letter channel (the Redis list or the Kafka topic), "
    "by reason category.",
    ["channel", "reason"],
    served_by=["agent", "scheduler", "manager"],
    section=TASK,
)
F_FAILOVERS = family(
    "tasklab_failovers_total",
    "counter",
    "Failovers this process carried out that gave work back: by the leader on a ZooKeeper "
    "departure, by the manager on missed heartbeats, by a stage 1 reaper on an expired key.",
    ["by"],
    served_by=["scheduler", "manager", "agent (stage 1)"],
    section=TASK,
)
F_FAILOVER_TASKS = family(
    "tasklab_failover_requeued_tasks_total",
    "counter",
    "Tasks those failovers sent back to queue:pending with attempt + 1.",
    ["by"],
    served_by=["scheduler", "manager", "agent (stage 1)"],
    section=TASK,
)

# The bounded values these counters' labels take, each series created at 0 (see _counter).
TASK_TYPES = tuple(t.value for t in TaskType)
FINAL_STATUSES = ("SUCCESS", "FAILED", "CANCELLED")
DEAD_LETTER_CHANNELS = ("redis", "kafka")
FAILOVER_KINDS = ("zookeeper", "heartbeat", "reaper")

TASKS_SUBMITTED = _counter(F_SUBMITTED, {"type": TASK_TYPES})
TASKS_STARTED = _counter(F_STARTED, {"type": TASK_TYPES})
TASKS_FINISHED = _counter(F_FINISHED, {"type": TASK_TYPES, "status": FINAL_STATUSES})
TASK_RETRIES = _counter(F_RETRIES, {"type": TASK_TYPES})
TASK_RUN_SECONDS = _histogram(F_RUN)
SCHEDULE_TO_START = _histogram(F_SCHEDULE_TO_START)
FAILOVERS = _counter(F_FAILOVERS, {"by": FAILOVER_KINDS})
FAILOVER_TASKS = _counter(F_FAILOVER_TASKS, {"by": FAILOVER_KINDS})

# -- the cluster, as Redis holds it (read at scrape time) --------------------------------------
CLUSTER = "Cluster state, read from Redis"
REDIS_READERS = ("scheduler", "manager", "rpc", "api", "agent (stage 1)")
F_REDIS_UP = family(
    "tasklab_redis_up",
    "gauge",
    "1 if this process read the cluster state from Redis at this scrape, 0 if Redis did not "
    "answer.",
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_QUEUE_DEPTH = family(
    "tasklab_queue_depth",
    "gauge",
    "Entries in a queue: pending, scheduling, delayed (retries in backoff), dead_letter, "
    "archive_outbox (final states the archiver has not archived yet; stage 5); and per agent "
    "(label agent) its inbox and its processing list (the attempts it runs).",
    ["queue", "agent"],
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_AGENTS_HEARTBEATING = family(
    "tasklab_agents_heartbeating",
    "gauge",
    "Agents whose heartbeat key in Redis has not expired.",
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_FENCED = family(
    "tasklab_fenced_writes_rejected_total",
    "counter",
    "Writes the Lua scripts refused (stats:transitions): stale_attempt and stale_epoch are the "
    "duplicates fencing prevented (a late report, a deposed leader); illegal, missing and "
    "reincarnated the other refusals.",
    ["reason"],
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_TRANSITIONS = family(
    "tasklab_transitions_accepted_total",
    "counter",
    "State transitions the Lua scripts applied (stats:transitions accepted).",
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_DEAD_LETTER_DROPPED = family(
    "tasklab_dead_letter_dropped_total",
    "counter",
    "Dead-letter entries pushed off the capped list by newer ones (stats:dead-letter dropped).",
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)
F_FENCE = family(
    "tasklab_scheduler_fence_epoch",
    "gauge",
    "fence:scheduler: the highest leader epoch Redis has seen; fenced writes below it fail.",
    served_by=REDIS_READERS,
    section=CLUSTER,
    collected=True,
)

# -- agents -----------------------------------------------------------------------------------
AGENT = "Agent"
F_AGENT_SLOTS = family(
    "tasklab_agent_slots",
    "gauge",
    "This agent's capacity: how many attempts it runs at once.",
    served_by=["agent"],
    section=AGENT,
    collected=True,
)
F_AGENT_SLOTS_USED = family(
    "tasklab_agent_slots_used",
    "gauge",
    "Attempts this agent is running now.",
    served_by=["agent"],
    section=AGENT,
    collected=True,
)
F_AGENT_PAUSED = family(
    "tasklab_agent_paused",
    "gauge",
    "1 while this agent takes no new work (ZooKeeper SUSPENDED, or not registered yet).",
    served_by=["agent"],
    section=AGENT,
    collected=True,
)
F_AGENT_HEARTBEAT_AGE = family(
    "tasklab_agent_heartbeat_age_seconds",
    "gauge",
    "Seconds since this agent's last heartbeat went through (Redis or the bus).",
    served_by=["agent"],
    section=AGENT,
    collected=True,
)

# -- the scheduler ----------------------------------------------------------------------------
SCHEDULER = "Scheduler"
F_IS_LEADER = family(
    "tasklab_scheduler_is_leader",
    "gauge",
    "1 while this scheduler is the elected leader and not suspended.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_EPOCH = family(
    "tasklab_scheduler_epoch",
    "gauge",
    "The fencing epoch of this scheduler's current term (0 when it is not leading).",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_TERMS = family(
    "tasklab_scheduler_terms_total",
    "counter",
    "Leadership terms this scheduler has begun.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_DISPATCHED = family(
    "tasklab_scheduler_dispatched_total",
    "counter",
    "Tasks this scheduler placed on an agent.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_RECOVERED = family(
    "tasklab_scheduler_recovered_total",
    "counter",
    "Messages a previous leader left in queue:scheduling that this one sent back to pending.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_DEPOSED = family(
    "tasklab_scheduler_deposed_total",
    "counter",
    "Fenced writes of this scheduler refused as stale: each ended its term (a newer leader).",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_AGENTS_LIVE = family(
    "tasklab_agents_live",
    "gauge",
    "Agents registered in ZooKeeper (/live-agents), as this scheduler's view has them. A "
    "scheduler keeps the view from its first term as leader on: a standby that has never led "
    "serves no sample of this family, nor of tasklab_agents_capacity_slots and "
    "tasklab_agents_used_slots (absent means unknown, never 0 agents). Read the cluster's "
    "value with max(tasklab_agents_live), or the leader's alone with "
    "tasklab_agents_live and on (instance) tasklab_scheduler_is_leader == 1.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_AGENTS_CAPACITY = family(
    "tasklab_agents_capacity_slots",
    "gauge",
    "The summed capacity of the live agents.",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)
F_AGENTS_USED = family(
    "tasklab_agents_used_slots",
    "gauge",
    "The summed load the live agents report (attempts running).",
    served_by=["scheduler"],
    section=SCHEDULER,
    collected=True,
)

# -- guarantees (the checker) -----------------------------------------------------------------
GUARANTEES = "Guarantees (the checker)"
F_VIOLATIONS = family(
    "tasklab_guarantee_violations",
    "gauge",
    "Tasks breaking a guarantee now, by check: running_without_owner (RUNNING, its agent not "
    "live for longer than checker_owner_grace), duplicate_attempts (held by two live agents at "
    "once), running_past_timeout (RUNNING past executionTimeout + checker_timeout_grace), "
    "stuck_pending, stuck_scheduled, stuck_dispatched (in that state past its deadline). Only "
    "the leading checker serves it: duplicate_attempts as of its last pass, the others as of "
    "its last full cycle over tasks:index.",
    ["check"],
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_VIOLATION_AGE = family(
    "tasklab_guarantee_oldest_violation_seconds",
    "gauge",
    "Per check, how long its oldest current violation has lasted (0 when there is none).",
    ["check"],
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_DEAD_LETTERS_UNSEEN = family(
    "tasklab_dead_letters_unseen",
    "gauge",
    "Dead letters not looked at yet, by channel: redis (entries of queue:dead-letter newer "
    "than the looked-at mark) and, from stage 3, kafka (messages of the dead-letter topic past "
    "the offsets of the group tasklab-dead-letter-review). `tasklab dead-letters-seen` marks "
    "them all.",
    ["channel"],
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_DEAD_LETTERS_UNSEEN_AGE = family(
    "tasklab_dead_letters_unseen_oldest_seconds",
    "gauge",
    "Age of the oldest dead letter not yet looked at, by channel (0 when there is none).",
    ["channel"],
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_CHECKER_LEADER = family(
    "tasklab_checker_is_leader",
    "gauge",
    "1 while this checker runs the checks (the elected one from stage 2; always in stage 1).",
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_CHECKER_PASSES = family(
    "tasklab_checker_passes_total",
    "counter",
    "Passes this checker ran: one window of tasks:index, the processing lists, dead letters.",
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_CHECKER_PASS_ERRORS = family(
    "tasklab_checker_pass_errors_total",
    "counter",
    "Passes that failed (Redis or ZooKeeper did not answer); the gauges keep their last values.",
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_CHECKER_CYCLE = family(
    "tasklab_checker_last_cycle_timestamp_seconds",
    "gauge",
    "When the checker last finished a full cycle over tasks:index (Unix time): the violation "
    "gauges are as of then. An alert on time() minus this catches a checker that stalled.",
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)
F_CHECKER_PASS_SECONDS = family(
    "tasklab_checker_pass_duration_seconds",
    "gauge",
    "How long the checker's last pass took.",
    served_by=["checker"],
    section=GUARANTEES,
    collected=True,
)

# -- cron schedules ---------------------------------------------------------------------------
SCHEDULES = "Cron schedules"
# Why a due start time was held back, as the firer's plan names it (common.domain.schedule.Skip):
# Forbid with a run still active. Not `suspended` (a paused schedule records nothing: on resume
# the firer sees what it missed) nor `too_late`: the firer only looks back as far as
# startingDeadlineSeconds, so a time past it is never due, as in Kubernetes.
SCHEDULE_SKIP_REASONS = ("forbid_active",)
F_SCHEDULE_FIRES = family(
    "tasklab_schedule_fires_total",
    "counter",
    "Runs this scheduler's firer created, one per fire time (its fenced write accepted; a fire "
    "time another leader fired already is not counted).",
    served_by=["scheduler (stage 2 on)"],
    section=SCHEDULES,
)
F_SCHEDULE_MISSED = family(
    "tasklab_schedule_missed_fires_total",
    "counter",
    "Start times passed over: when a fire ran and more than one start time was due (after "
    "downtime, a pause or a Forbid wait), only the most recent ran; the others count here.",
    served_by=["scheduler (stage 2 on)"],
    section=SCHEDULES,
)
F_SCHEDULE_SKIPPED = family(
    "tasklab_schedule_skipped_total",
    "counter",
    "Due start times a schedule's policy held back, each counted once by the firer that saw "
    "it, by reason: forbid_active (concurrencyPolicy Forbid, a run still active; the most "
    "recent may still run when it ends, within startingDeadlineSeconds).",
    ["reason"],
    served_by=["scheduler (stage 2 on)"],
    section=SCHEDULES,
)
SCHEDULE_FIRES = _counter(F_SCHEDULE_FIRES)
SCHEDULE_MISSED = _counter(F_SCHEDULE_MISSED)
SCHEDULE_SKIPPED = _counter(F_SCHEDULE_SKIPPED, {"reason": SCHEDULE_SKIP_REASONS})

# -- Kafka ------------------------------------------------------------------------------------
KAFKA = "Kafka"
F_LAG = family(
    "tasklab_kafka_consumer_lag",
    "gauge",
    "Messages a consumer group has not yet committed on a partition this process reads "
    "(high watermark minus committed offset, from librdkafka's statistics).",
    ["group", "topic", "partition"],
    served_by=["manager", "agent (stage 3 on)", "archiver"],
    section=KAFKA,
    collected=True,
)

# -- the archive ------------------------------------------------------------------------------
ARCHIVE = "Archive (PostgreSQL)"
F_ARCHIVE_ROWS = family(
    "tasklab_archive_rows_total",
    "counter",
    "Rows this archiver inserted into task_attempts, one per attempt's final state, by status "
    "and by source: event (an agent's report on the status topic) or outbox (a final state no "
    "agent reports: a cancel, a failover giving up, a composite's parent and skipped children).",
    ["status", "source"],
    served_by=["archiver"],
    section=ARCHIVE,
)
F_ARCHIVE_DUPLICATES = family(
    "tasklab_archive_duplicates_total",
    "counter",
    "Final states whose (task, attempt) row was already archived, by source (event, outbox): "
    "redeliveries, or a cancelled run both reported by its agent and written to the outbox, "
    "that the idempotent write absorbed (ON CONFLICT DO NOTHING).",
    ["source"],
    served_by=["archiver"],
    section=ARCHIVE,
)
F_ARCHIVE_ERRORS = family(
    "tasklab_archive_errors_total",
    "counter",
    "Batches the archiver could not write and will read again (database: PostgreSQL down; "
    "redis: the task could not be read; bus: a dead letter not acknowledged), and messages it "
    "dead-lettered (malformed, refused).",
    ["reason"],
    served_by=["archiver"],
    section=ARCHIVE,
)
F_ARCHIVE_DELAY = family(
    "tasklab_archive_delay_seconds",
    "histogram",
    "From a final state (an agent's report, or an outbox entry) to its row committed in "
    "PostgreSQL: how far the archive is behind (an outage shows here once it ends, and as "
    "consumer lag and the outbox's age while it lasts).",
    served_by=["archiver"],
    section=ARCHIVE,
    buckets=WAIT_BUCKETS,
)
F_ARCHIVE_OUTBOX_AGE = family(
    "tasklab_archive_outbox_oldest_seconds",
    "gauge",
    "Age of the oldest entry of the archive's outbox (archive:outbox) not archived yet, 0 when "
    "it is empty: how far behind the archiver is on the final states no agent reports. Read "
    "from Redis, so it is served while the archiver is down (its length is "
    'tasklab_queue_depth{queue="archive_outbox"}).',
    served_by=[*REDIS_READERS, "archiver"],
    section=ARCHIVE,
    collected=True,
)
ARCHIVE_SOURCES = ("event", "outbox")
ARCHIVE_ROWS = _counter(F_ARCHIVE_ROWS)
ARCHIVE_DUPLICATES = _counter(F_ARCHIVE_DUPLICATES, {"source": ARCHIVE_SOURCES})
ARCHIVE_ERRORS = _counter(F_ARCHIVE_ERRORS)
ARCHIVE_DELAY = _histogram(F_ARCHIVE_DELAY)

# -- front doors ------------------------------------------------------------------------------
FRONT = "Front doors"
F_GRPC_REQUESTS = family(
    "tasklab_grpc_server_requests_total",
    "counter",
    "gRPC calls this provider answered, by method and status code.",
    ["method", "code"],
    served_by=["rpc"],
    section=FRONT,
)
F_GRPC_DURATION = family(
    "tasklab_grpc_server_request_duration_seconds",
    "histogram",
    "How long a gRPC call took, to its last message (a Watch lasts as long as it watches).",
    ["method"],
    served_by=["rpc"],
    section=FRONT,
    buckets=REQUEST_BUCKETS,
)
F_HTTP_REQUESTS = family(
    "tasklab_http_requests_total",
    "counter",
    "HTTP requests the REST API answered, by route template, method and status.",
    ["route", "method", "status"],
    served_by=["api"],
    section=FRONT,
)
F_HTTP_DURATION = family(
    "tasklab_http_request_duration_seconds",
    "histogram",
    "How long an HTTP request took, to the end of its body (a follow stream lasts long).",
    ["route", "method"],
    served_by=["api"],
    section=FRONT,
    buckets=REQUEST_BUCKETS,
)
GRPC_REQUESTS = _counter(F_GRPC_REQUESTS)
GRPC_DURATION = _histogram(F_GRPC_DURATION)
HTTP_REQUESTS = _counter(F_HTTP_REQUESTS)
HTTP_DURATION = _histogram(F_HTTP_DURATION)

# -- the process ------------------------------------------------------------------------------
PROCESS = "Process"
F_ROLE = family(
    "tasklab_role_info",
    "gauge",
    "Always 1: which role and stage this process runs (join on instance).",
    ["role", "stage"],
    served_by=["every role"],
    section=PROCESS,
)
ROLE_INFO = Gauge(F_ROLE.name, F_ROLE.help, F_ROLE.labels)

# -- log shipping -----------------------------------------------------------------------------
LOGS = "Log shipping (TASKLAB_LOGS_URL)"
# Why a line never reached the store: its queue was full (the store away longer than the queue
# holds), the store refused the batch (HTTP 4xx: retrying would not help), or the role stopped
# before the store took it. A bounded set, so a label.
LOG_DROP_REASONS = ("queue_full", "rejected", "shutdown")
F_LOG_LINES_SHIPPED = family(
    "tasklab_log_lines_shipped_total",
    "counter",
    "Log lines this process shipped to the log store (VictoriaLogs), after the store took them.",
    served_by=["every role"],
    section=LOGS,
)
F_LOG_LINES_DROPPED = family(
    "tasklab_log_lines_dropped_total",
    "counter",
    "Log lines this process did not ship, by reason: queue_full, rejected, shutdown. Its "
    "stderr still has them.",
    ["reason"],
    served_by=["every role"],
    section=LOGS,
)
LOG_LINES_SHIPPED = _counter(F_LOG_LINES_SHIPPED)
LOG_LINES_DROPPED = _counter(F_LOG_LINES_DROPPED)


# -- recording helpers ------------------------------------------------------------------------
def record_outcome(task_type: str, verdict: str, accepted: bool) -> None:
    """Count an outcome decision (common.domain.outcome.Verdict) once its write went through.

    SUCCESS and FAILED are final statuses written here; RETRY is a retry. A CANCELLED attempt
    was ended by the cancel, which wrote CANCELLED and is counted where it was accepted (the
    task client); a SUPERSEDED attempt or a refused write changed nothing.
    """
    if not accepted:
        return
    if verdict == "RETRY":
        TASK_RETRIES.labels(task_type).inc()
    elif verdict in ("SUCCESS", "FAILED"):
        TASKS_FINISHED.labels(task_type, verdict).inc()


def attempt_outcome(success: bool, timed_out: bool, cancelled: bool, superseded: bool) -> str:
    """The `outcome` label of tasklab_task_run_seconds for an attempt that ended."""
    if superseded:
        return "superseded"
    if success:
        return "success"
    if timed_out:
        return "timed_out"
    if cancelled:
        return "cancelled"
    return "failed"


# A dead letter's reason is free text (what was wrong with that message); the label is its
# category, so the number of series stays fixed whatever the messages say. First match wins.
_DEAD_LETTER_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("too_large", re.compile(r"too large|over the \d+-byte limit|exceeds", re.I)),
    ("not_json", re.compile(r"json|decode|utf-?8|expecting value|parse", re.I)),
    ("conflict", re.compile(r"conflict|idempotency|requestid", re.I)),
    ("unknown_task", re.compile(r"no task|does not exist|missing task|unknown task", re.I)),
    ("invalid", re.compile(r"invalid|validation|must be|field required|not a |unknown", re.I)),
    ("not_applicable", re.compile(r"cannot apply|is placed on|illegal|cannot", re.I)),
)
DEAD_LETTER_REASONS = tuple(name for name, _ in _DEAD_LETTER_REASONS) + ("other",)
DEAD_LETTERS = _counter(
    F_DEAD_LETTERS, {"channel": DEAD_LETTER_CHANNELS, "reason": DEAD_LETTER_REASONS}
)


def dead_letter_reason(text: str) -> str:
    """The bounded category (one of DEAD_LETTER_REASONS) of a dead letter's reason text."""
    for name, pattern in _DEAD_LETTER_REASONS:
        if pattern.search(text):
            return name
    return "other"


def record_dead_letter(channel: str, reason_text: str) -> None:
    DEAD_LETTERS.labels(channel, dead_letter_reason(reason_text)).inc()


def record_failover(by: str, requeued: int) -> None:
    FAILOVERS.labels(by).inc()
    if requeued:
        FAILOVER_TASKS.labels(by).inc(requeued)


# -- collectors registered by the roles -------------------------------------------------------
_registered: dict[str, Collector] = {}
_registered_lock = threading.Lock()


def register_collector(name: str, collector: Collector) -> None:
    """Add a scrape-time collector to this process's registry, replacing one of the same name.

    A process runs one role, so one of each; but tests build several roles in one process, and
    the newest one is the one to read (the registry refuses two that yield the same names).
    """
    with _registered_lock:
        old = _registered.pop(name, None)
        if old is not None:
            REGISTRY.unregister(old)
        REGISTRY.register(collector)
        _registered[name] = collector


def unregister_collector(name: str) -> None:
    with _registered_lock:
        old = _registered.pop(name, None)
        if old is not None:
            REGISTRY.unregister(old)
