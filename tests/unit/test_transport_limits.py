"""One payload limit, checked at start-up against what each transport carries."""

import pytest

from common.config.settings import (
    KAFKA_MESSAGE_MAX_BYTES,
    ConfigError,
    check_transport_limits,
    largest_payload_carried,
    load_settings,
)
from common.domain.composite import MAX_CHILD_INPUT_BYTES
from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    ESCAPED_PAYLOAD_FACTOR,
    MESSAGE_ENVELOPE_BYTES,
)


def test_the_default_limit_fits_every_transport_in_every_stage():
    for stage in (1, 2, 3, 4, 5):
        check_transport_limits(load_settings(stage=stage), stage)
    assert load_settings().max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES


def test_a_raised_limit_that_kafka_carries_is_accepted_in_stage_3():
    assert load_settings(stage=3, max_payload_bytes=200_000).max_payload_bytes == 200_000


def test_a_limit_kafka_cannot_carry_is_refused_from_stage_3_on_with_one_line():
    with pytest.raises(ConfigError) as err:
        load_settings(stage=3, max_payload_bytes=5_000_000)
    message = str(err.value)
    assert "\n" not in message
    assert "max_payload_bytes (TASKLAB_MAX_PAYLOAD_BYTES) is 5000000" in message
    assert f"carries at most {KAFKA_MESSAGE_MAX_BYTES} bytes" in message


def test_the_same_limit_is_fine_where_only_redis_carries_tasks():
    settings = load_settings(stage=2, max_payload_bytes=5_000_000)
    with pytest.raises(ConfigError, match="Kafka"):
        check_transport_limits(settings, 3)


def test_the_largest_limit_accepted_is_the_largest_whose_messages_fit_a_kafka_message():
    fits = largest_payload_carried(KAFKA_MESSAGE_MAX_BYTES)
    # The largest message is a composite child's: its payload beside its TASKLAB_INPUT.
    assert ESCAPED_PAYLOAD_FACTOR * (fits + MAX_CHILD_INPUT_BYTES) + MESSAGE_ENVELOPE_BYTES <= (
        KAFKA_MESSAGE_MAX_BYTES
    )
    check_transport_limits(load_settings(stage=3, max_payload_bytes=fits))
    with pytest.raises(ConfigError, match=f"fits a payload of up to {fits} bytes"):
        check_transport_limits(load_settings(stage=2, max_payload_bytes=fits + 1), 3)


def test_a_limit_no_redis_value_can_hold_is_refused_in_every_stage():
    with pytest.raises(ConfigError, match="Redis"):
        load_settings(stage=1, max_payload_bytes=300 * 1024 * 1024)
