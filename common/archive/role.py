"""`tasklab run archiver`: the archiver role, for any stage with the bus (3 on; stage 5 runs it).

Start-up: the topics exist (the role may be the first on the bus), the schema is at head
(migrated under the advisory lock, so any number of archivers may start at once), then the
consumer loop (common/archive/archiver.py) until SIGTERM, and beside it, in a thread of its own
with its own connections, the consumer of the outbox stream (common/archive/outbox.py), which
creates the stream and its group first. PostgreSQL not answering at start is waited out with a
backoff, like an outage later on: the process stays up and says why. Should either loop end
by a bug rather than by SIGTERM, the other is stopped too and the process exits 1, so that its
supervisor restarts the whole archiver rather than leave half of it running.
"""

from __future__ import annotations

import signal
import sys
import threading

import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from common.adapters.redis_client import redis_client
from common.adapters.redis_metrics import observe_redis
from common.archive import migrate
from common.archive.archiver import ARCHIVER_GROUP, Archiver, redis_tasks
from common.archive.outbox import OutboxArchiver, OutboxDeadLetters
from common.archive.store import PostgresArchive
from common.config import Settings
from common.domain.backoff import ExponentialBackoff
from common.messaging.clients import Bus, EventPublisher
from common.messaging.dead_letter import DeadLetters
from common.messaging.topics import ensure_topics
from common.observability import get_logger
from common.observability.health import CHECKS

log = get_logger("tasklab.archiver")


def migrate_when_reachable(
    dsn: str, stopping: threading.Event, backoff: ExponentialBackoff
) -> bool:
    """Upgrade the schema to head, waiting for PostgreSQL; False if told to stop first."""
    failures = 0
    while not stopping.is_set():
        try:
            revision = migrate.upgrade(dsn)
            log.info("archive schema at revision %s", revision)
            return True
        except (sqlalchemy.exc.OperationalError, psycopg.OperationalError) as exc:
            failures += 1
            delay = backoff.delay(failures)
            first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            log.warning("archive: PostgreSQL not reachable (%s); again in %.1fs", first, delay)
            stopping.wait(delay)
    return False


def session_config(settings: Settings) -> dict[str, int]:
    """The archiver's consumer session: a killed archiver's partitions go to a live one once it
    ends (a clean stop leaves the group at once). Heartbeats at a third of it, as Kafka
    advises, so that one late heartbeat is not taken for a death."""
    session_ms = round(settings.archive_session_timeout * 1000)
    return {"session.timeout.ms": session_ms, "heartbeat.interval.ms": session_ms // 3}


def run_archiver(settings: Settings) -> None:
    if not settings.archive_dsn:
        print(
            "error: no archive configured: set TASKLAB_ARCHIVE_DSN "
            "(`tasklab dev up --stage 5` prints it)",
            file=sys.stderr,
        )
        sys.exit(2)
    bus = Bus.from_settings(settings)
    try:
        ensure_topics(bus.bootstrap, bus.namespace)
    except KafkaException as exc:
        sys.exit(f"error: cannot reach Kafka at {bus.bootstrap} ({exc.args[0].str()})")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    backoff = ExponentialBackoff(0.2, settings.archive_retry_max)
    archive = PostgresArchive(settings.archive_dsn)

    def postgresql() -> tuple[bool, str]:
        # Its own short connection: the archiver's is not shared between threads.
        with psycopg.connect(settings.archive_dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True, "SELECT 1 answered"

    CHECKS.add("postgresql", postgresql)
    observe_redis(settings.redis_url)
    # Not ready while the schema is being migrated (or PostgreSQL awaited): the consumer is
    # not reading yet.
    CHECKS.add("archiver", lambda: (False, "schema not migrated yet"))
    if not migrate_when_reachable(settings.archive_dsn, stopping, backoff):
        return
    publisher = EventPublisher(bus, client_id=f"archiver-{settings.archive_id}")
    archiver = Archiver(
        bus,
        f"archiver-{settings.archive_id}",
        archive,
        redis_tasks(redis_client(settings.redis_url)),
        DeadLetters(publisher, bus.group(ARCHIVER_GROUP)),
        batch_max=settings.archive_batch_max,
        backoff=backoff,
        **session_config(settings),
    )
    # The broker asked by a client of its own: a call on the archiver's consumer would queue
    # behind its consume() and time out while it waits for a batch.
    admin = AdminClient({"bootstrap.servers": bus.bootstrap, "logger": log})

    def kafka() -> tuple[bool, str]:
        # Half the probe's budget, as the manager's check (observe_consumer) says why.
        brokers = admin.list_topics(timeout=CHECKS.timeout / 2).brokers
        return bool(brokers), f"{len(brokers)} broker(s)"

    CHECKS.add("kafka", kafka)
    CHECKS.add("archiver", lambda: (True, f"{archiver.archived} row(s) archived"))
    # Its own PostgreSQL and Redis connections: neither is shared between threads.
    outbox = OutboxArchiver(
        redis_client(settings.redis_url),
        f"archiver-{settings.archive_id}",
        PostgresArchive(settings.archive_dsn),
        redis_tasks(redis_client(settings.redis_url)),
        OutboxDeadLetters(publisher, bus.group(ARCHIVER_GROUP)),
        batch_max=settings.archive_batch_max,
        backoff=backoff,
        claim_idle=settings.archive_claim_idle,
        forget_after=settings.archive_forget_after,
    )
    crashed = threading.Event()
    outbox_thread = threading.Thread(
        target=_until_crash, args=(outbox.run, stopping, crashed), name="archive-outbox"
    )
    CHECKS.add(
        "outbox",
        lambda: (
            outbox.ready and outbox_thread.is_alive(),
            f"{outbox.archived} row(s) archived from {outbox.key}"
            if outbox.ready
            else f"{outbox.key} not created yet",
        ),
    )
    log.info(
        "archiver %s started: group %s, batches of up to %d; outbox %s",
        settings.archive_id,
        archiver.group,
        settings.archive_batch_max,
        outbox.key,
    )
    outbox_thread.start()
    try:
        _until_crash(archiver.run, stopping, crashed)
    finally:
        stopping.set()
        outbox_thread.join(30)
        publisher.close()
        archive.close()
        outbox.archive.close()
        log.info(
            "archiver %s stopped: %d row(s) archived from the bus, %d from the outbox, "
            "%d duplicate(s) absorbed",
            settings.archive_id,
            archiver.archived,
            outbox.archived,
            archiver.duplicates + outbox.duplicates,
        )
    if crashed.is_set():
        sys.exit(1)


def _until_crash(loop, stopping: threading.Event, crashed: threading.Event) -> None:
    """Run one of the archiver's loops; an exception it did not handle is a bug: logged, and
    the whole process told to stop (the other loop too), to exit 1."""
    try:
        loop(stopping)
    except Exception:
        log.exception("archiver loop %s failed; stopping the archiver", loop.__qualname__)
        crashed.set()
        stopping.set()
