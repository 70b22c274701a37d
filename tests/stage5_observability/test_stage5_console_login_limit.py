"""The console's login limit on a real Redis: wrong keys from one address spend its bucket (the
API's token bucket script), the next login is a 429 page with Retry-After and the reason next to
the field, and once a token has come back a good key logs in. No provider is needed: a login
only asks the authenticator and the bucket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from common import keys
from common.api.app import create_app
from common.api.console.login_limit import LoginThrottle
from common.config import Settings
from common.testing import eventually

pytestmark = pytest.mark.integration

BASE = "http://console.test"
SAME_ORIGIN = {"Origin": BASE}
GOOD = "operator-key-for-login-tests"
FAILURES = 3
WINDOW = 1.5  # one wrong key comes back every half second: the test waits that, not a minute


@pytest.fixture
def app(redis_url: str):
    settings = Settings(
        redis_url=redis_url,
        zk_hosts="127.0.0.1:1",
        kafka_bootstrap="",
        api_keys={GOOD: ["TaskRead"]},
        api={"rate_limiting": {"login_failures": FAILURES, "login_window": WINDOW}},
    )
    return create_app(settings)


@pytest.fixture
def console(app) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE, client=("192.0.2.10", 50000)) as client:
        yield client


def login(client: TestClient, key: str):
    return client.post(
        "/ui/login", data={"apiKey": key}, headers=SAME_ORIGIN, follow_redirects=False
    )


def test_after_three_wrong_keys_the_next_login_is_429_with_the_reason_next_to_the_field(
    console, app, redis_client
):
    # Given three wrong keys from one address, each answered 401 with its reason
    for _ in range(FAILURES):
        assert login(console, "wrong-key").status_code == 401
    # When the next login comes, even with the good key
    refused = login(console, GOOD)
    # Then it is refused before the key is looked at: 429, Retry-After, the message by the field
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert 'id="apiKey-error"' in refused.text and "Too many wrong keys" in refused.text
    assert "set-cookie" not in refused.headers, "no session for a refused login"
    # ...kept in the API's own bucket script, in Redis, under the address
    bucket = keys.rate_limit(LoginThrottle.bucket("192.0.2.10"))
    assert redis_client.exists(bucket) == 1
    # ...another address is not held back
    with TestClient(app, base_url=BASE, client=("192.0.2.99", 50000)) as other:
        assert login(other, "wrong-key").status_code == 401
    # And once a token has come back, the good key logs in
    answer = eventually(
        lambda: (r := login(console, GOOD)).status_code == 303 and r,
        5,
        interval=0.2,
        message="the good key logs in after the window",
    )
    assert answer.headers["location"] == "/ui/tasks"


def test_good_keys_are_never_slowed_however_often_they_log_in(console):
    for _ in range(FAILURES * 4):
        assert login(console, GOOD).status_code == 303
    assert login(console, "wrong-key").status_code == 401, "the bucket is still full"
