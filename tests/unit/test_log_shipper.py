"""The log shipper against a fake log store (an in-process HTTP server): batches by size and by
time, retries while the store is down, drops and counts past its bound, never blocks a role,
and flushes at close. The real VictoriaLogs is in tests/stage5_observability/test_logs.py."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY

from common.observability.logging import bind, set_identity
from common.observability.logshipping import (
    InvalidLogsUrl,
    LogShipper,
    check_logs_url,
    ship_logs,
)
from common.testing import eventually


class FakeStore:
    """Answers each POST with the next status in `statuses` (the last one repeats)."""

    def __init__(self) -> None:
        self.statuses = [204]
        self.posts: list[tuple[str, dict, list[str]]] = []
        self.lock = threading.Lock()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                parts = urllib.parse.urlsplit(self.path)
                with store.lock:
                    status = store.statuses.pop(0) if len(store.statuses) > 1 else store.statuses[0]
                    if status < 300:
                        query = dict(urllib.parse.parse_qsl(parts.query))
                        store.posts.append((parts.path, query, body.splitlines()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def lines(self) -> list[str]:
        with self.lock:
            return [line for _, _, batch in self.posts for line in batch]

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return [len(batch) for _, _, batch in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store():
    fake = FakeStore()
    yield fake
    fake.close()


@pytest.fixture
def logger():
    log = logging.getLogger("tasklab.test-shipper")
    log.setLevel(logging.INFO)
    log.propagate = False
    set_identity("agent", "agent-1")
    handlers: list[LogShipper] = []

    def attach(shipper: LogShipper) -> logging.Logger:
        handlers.append(shipper)
        log.addHandler(shipper)
        return log

    yield attach
    for shipper in handlers:
        log.removeHandler(shipper)
        shipper.close()
    set_identity()


def test_lines_go_in_batches_of_batch_lines_to_insert_jsonline(store, logger):
    shipper = LogShipper(store.url, batch_lines=3, flush_interval=0.3)
    log = logger(shipper)
    with bind(taskId="t-1"):
        for n in range(7):
            log.info("line %d", n)
    eventually(lambda: store.batch_sizes() == [3, 3, 1], 5, message="three batches")
    path, query, batch = store.posts[0]
    assert path == "/insert/jsonline"
    assert query == {"_stream_fields": "role,process", "_msg_field": "msg", "_time_field": "ts"}
    assert '"msg": "line 0"' in batch[0] and '"taskId": "t-1"' in batch[0]
    assert '"role": "agent", "process": "agent-1"' in batch[0]
    assert shipper.shipped == 7


def test_a_lone_line_is_posted_after_flush_interval_without_waiting_for_a_full_batch(store, logger):
    log = logger(LogShipper(store.url, batch_lines=500, flush_interval=0.2))
    started = time.monotonic()
    log.info("alone")
    eventually(lambda: store.batch_sizes() == [1], 5, message="the line posted")
    assert time.monotonic() - started < 2


def test_a_store_that_answers_503_is_retried_and_every_line_arrives_once_in_order(store, logger):
    store.statuses = [503, 503, 204]
    shipper = LogShipper(store.url, batch_lines=2, flush_interval=0.1, backoff_max=0.2)
    log = logger(shipper)
    for n in range(5):
        log.info("line %d", n)
    eventually(lambda: len(store.lines()) == 5, 10, message="all five lines")
    assert [line.split('"msg": "')[1].split('"')[0] for line in store.lines()] == [
        f"line {n}" for n in range(5)
    ]
    assert shipper.dropped == {}


def test_a_batch_the_store_refuses_with_a_4xx_is_dropped_and_counted_not_retried(store, logger):
    before = REGISTRY.get_sample_value("tasklab_log_lines_dropped_total", {"reason": "rejected"})
    store.statuses = [400, 204]
    shipper = LogShipper(store.url, batch_lines=2, flush_interval=0.1)
    log = logger(shipper)
    log.info("refused 1")
    log.info("refused 2")
    eventually(lambda: shipper.dropped.get("rejected") == 2, 5, message="two rejected")
    log.info("after")
    eventually(lambda: len(store.lines()) == 1, 5, message="the next batch goes")
    after = REGISTRY.get_sample_value("tasklab_log_lines_dropped_total", {"reason": "rejected"})
    assert after - (before or 0) == 2


def test_past_its_bound_a_line_is_dropped_and_counted_and_logging_never_waits(store, logger):
    # Given a store that is down and a shipper that holds 5 queued lines and a batch of 2
    store.statuses = [503]
    shipper = LogShipper(
        store.url, queue_lines=5, batch_lines=2, flush_interval=0.05, backoff_max=0.1
    )
    log = logger(shipper)

    # When 20 lines are logged
    started = time.monotonic()
    for n in range(20):
        log.info("line %d", n)
    took = time.monotonic() - started

    # Then logging took no time, and what did not fit was dropped and counted
    assert took < 0.5
    assert 13 <= shipper.dropped["queue_full"] <= 15

    # ...and once the store is back, the rest arrives: nothing lost that was not counted
    store.statuses = [204]
    eventually(
        lambda: len(store.lines()) + shipper.dropped["queue_full"] == 20, 10, message="the rest"
    )


def test_close_posts_what_is_queued_before_it_returns(store, logger):
    shipper = LogShipper(store.url, batch_lines=500, flush_interval=30)
    log = logger(shipper)
    for n in range(3):
        log.info("line %d", n)
    shipper.close()
    assert len(store.lines()) == 3
    assert shipper.dropped == {}


def test_close_with_the_store_away_counts_what_it_could_not_post_and_returns(store, logger):
    store.statuses = [503]
    shipper = LogShipper(store.url, batch_lines=2, flush_interval=0.05, close_timeout=1)
    log = logger(shipper)
    for n in range(5):
        log.info("line %d", n)
    started = time.monotonic()
    shipper.close()
    assert time.monotonic() - started < 3
    assert shipper.dropped.get("shutdown") == 5


@pytest.mark.parametrize(
    "url", ["", "logs:9428", "ftp://logs:9428", "http://", "http://logs:port", "nope"]
)
def test_a_logs_url_that_is_no_http_url_is_refused_with_its_value_named(url):
    with pytest.raises(InvalidLogsUrl, match="TASKLAB_LOGS_URL="):
        check_logs_url(url)


def test_a_good_logs_url_loses_its_trailing_slash():
    assert check_logs_url("http://127.0.0.1:9428/") == "http://127.0.0.1:9428"


def test_ship_logs_with_an_unusable_url_logs_why_and_adds_no_handler(caplog):
    root = logging.getLogger()
    before = list(root.handlers)
    with caplog.at_level(logging.ERROR, logger="tasklab.logshipping"):
        assert ship_logs("logs:9428") is None
    assert root.handlers == before
    assert "is not an http://host:port URL" in caplog.text
    assert "stay on stderr only" in caplog.text
