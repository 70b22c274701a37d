"""Ship every JSON log line of a role to the log store (VictoriaLogs), never at the role's cost.

`tasklab run ROLE` adds a `LogShipper` handler when TASKLAB_LOGS_URL is set. The role's stderr
stays its log as before; the store is an addition, so `tasklab logs --all --task ID` can read
one task's lines from every role in one place.

What it must never do is block or kill the role. So `emit` only puts the formatted line on a
bounded queue (`put_nowait`), and one background thread posts batches: when `batch_lines` are
waiting or `flush_interval` after the first one, whichever comes first. While the store is away
the thread keeps its batch and retries with a doubling backoff; lines logged meanwhile wait in
the queue, up to `queue_lines`. Past that bound a new line is dropped and counted
(`tasklab_log_lines_dropped_total{reason="queue_full"}`): memory stays bounded, the role runs
on, and the metric says what the store is missing. At shutdown (logging.shutdown, run at exit)
the thread gets `close_timeout` to post what is left.

The wire: VictoriaLogs's JSON stream API, `POST /insert/jsonline`, chosen over the Loki push
API that VictoriaLogs also accepts because our lines already are JSON objects: jsonline takes
them as they are, one per line, and makes every key a field LogsQL can filter on
(`taskId:="..."`). Loki's push API carries a line as an opaque string with labels; a taskId
would have to be a label (one stream per task, what Loki forbids) or structured metadata
re-encoded next to the line. `_stream_fields=role,process` makes each process one stream
(few, long-lived), `_msg_field=msg` and `_time_field=ts` name our keys for its message and time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from common.observability import metrics
from common.observability.logging import JsonFormatter, context_filter

log = logging.getLogger("tasklab.logshipping")

INSERT_PATH = "/insert/jsonline"
INSERT_QUERY = {"_stream_fields": "role,process", "_msg_field": "msg", "_time_field": "ts"}


class InvalidLogsUrl(ValueError):
    """TASKLAB_LOGS_URL is not an http(s)://host:port URL."""


def check_logs_url(url: str) -> str:
    """The URL without a trailing slash, or InvalidLogsUrl with a one-line reason."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidLogsUrl(
            f"TASKLAB_LOGS_URL={url!r} is not an http://host:port URL "
            "(`tasklab dev up --stage 5` prints the log store's)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidLogsUrl(f"TASKLAB_LOGS_URL={url!r}: {exc}") from None
    return url.strip().rstrip("/")


class LogShipper(logging.Handler):
    ships_logs = True  # configure_logging closes it when it replaces the handlers

    def __init__(
        self,
        url: str,
        queue_lines: int = 10_000,
        batch_lines: int = 500,
        flush_interval: float = 1.0,
        timeout: float = 2.0,
        backoff_max: float = 10.0,
        close_timeout: float = 3.0,
    ) -> None:
        super().__init__()
        self.url = check_logs_url(url)
        self.insert_url = f"{self.url}{INSERT_PATH}?{urllib.parse.urlencode(INSERT_QUERY)}"
        self.batch_lines = batch_lines
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.backoff_max = backoff_max
        self.close_timeout = close_timeout
        self.setFormatter(JsonFormatter())
        self.addFilter(context_filter())
        self._queue: queue.Queue[str] = queue.Queue(maxsize=queue_lines)
        self._stopping = threading.Event()
        self._owner = os.getpid()
        self._store_down = False
        self.shipped = 0  # also in the metrics; read by tests that build a shipper in-process
        self.dropped: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    # -- the role's side: never waits ------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._owner or self._stopping.is_set():
            # A forked child (a task's zygote) has the handler but not the thread: its lines
            # go to its stderr only. After close, nothing would post them.
            return
        if record.name == log.name:
            # The shipper's own notes ("store unreachable") stay on stderr: shipping them
            # would queue a line about the store for every failed post to it.
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own rule: a bad record never raises
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._drop("queue_full", 1)

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        metrics.LOG_LINES_DROPPED.labels(reason).inc(n)

    # -- the background thread -------------------------------------------------------------
    def _run(self) -> None:
        batch: list[str] = []
        backoff = 0.5
        while True:
            if not batch:
                batch = self._collect()
                if not batch:
                    if self._stopping.is_set():
                        return
                    continue
            outcome = self._post(batch)
            if outcome == "sent" or outcome == "rejected":
                batch = []
                backoff = 0.5
                continue
            # The store is away: keep the batch, wait, try again; the queue keeps filling
            # behind it up to its bound. At shutdown, close() decides when to give up.
            if self._stopping.wait(backoff):
                self._drop("shutdown", len(batch))
                return
            backoff = min(backoff * 2, self.backoff_max)

    def _collect(self) -> list[str]:
        """Up to batch_lines lines: waits for the first, then at most flush_interval more."""
        try:
            wait = 0.05 if self._stopping.is_set() else self.flush_interval
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_lines:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                # At shutdown: what is already queued goes now, without the wait.
                batch.extend(self._drain(self.batch_lines - len(batch)))
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _drain(self, most: int) -> list[str]:
        lines: list[str] = []
        while len(lines) < most:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return lines

    def _post(self, batch: list[str]) -> str:
        body = ("\n".join(batch) + "\n").encode()
        request = urllib.request.Request(
            self.insert_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/stream+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                # The store read the batch and refused it: the same batch again gets the same
                # answer, so it is dropped (and counted), not retried forever.
                self._drop("rejected", len(batch))
                log.warning("log store refused %d line(s): HTTP %d", len(batch), exc.code)
                return "rejected"
            self._note_down(f"HTTP {exc.code}")
            return "down"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._note_down(str(getattr(exc, "reason", exc)))
            return "down"
        self.shipped += len(batch)
        metrics.LOG_LINES_SHIPPED.inc(len(batch))
        if self._store_down:
            self._store_down = False
            log.info("log store at %s answers again; shipping resumed", self.url)
        return "sent"

    def _note_down(self, why: str) -> None:
        # Once per outage, not once per retry.
        if not self._store_down:
            self._store_down = True
            log.warning(
                "cannot reach the log store at %s (%s); retrying, keeping up to %d lines",
                self.url,
                why,
                self._queue.maxsize,
            )

    # -- shutdown --------------------------------------------------------------------------
    def flush(self) -> None:
        """Wait (bounded) until the queue is empty; used by tests and at close."""
        deadline = time.monotonic() + self.close_timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        if not self._stopping.is_set() and os.getpid() == self._owner:
            self._stopping.set()
            self._thread.join(self.close_timeout)
            left = self._queue.qsize()
            if left:
                self._drop("shutdown", left)
        super().close()


def ship_logs(url: str, **options) -> LogShipper | None:
    """Add a LogShipper to the root logger; None (and an error line) if `url` is unusable.

    An unusable TASKLAB_LOGS_URL costs the role its shipped logs, never its run: the role
    logs why to stderr and goes on.
    """
    if not url:
        return None
    try:
        shipper = LogShipper(url, **options)
    except InvalidLogsUrl as exc:
        log.error("%s; log lines stay on stderr only", exc)
        return None
    logging.getLogger().addHandler(shipper)
    return shipper
