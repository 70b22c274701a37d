"""A log line's timestamp is formatted from a cached second: the text must be exactly what
formatting the datetime gives, at every edge of a second."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from common.observability.logging import rfc3339


def formatted(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize(
    "fraction", [0.0, 0.0000004, 0.0005, 0.0009999, 0.5, 0.9994999, 0.9995, 0.999, 0.9999996]
)
def test_a_timestamp_at_the_edge_of_a_second_reads_as_the_datetime_would(fraction):
    for second in (1796013576, 1796013577, 0, 4102444799):
        assert rfc3339(second + fraction) == formatted(second + fraction)


def test_timestamps_in_any_order_read_as_the_datetime_would():
    picks = random.Random(2026113002)
    # Within one second, across seconds, and back again: the cache must never leak a second.
    moments = [picks.uniform(1.7e9, 1.8e9) for _ in range(2000)]
    moments += [1796013576 + picks.random() for _ in range(500)]
    picks.shuffle(moments)
    assert [rfc3339(m) for m in moments] == [formatted(m) for m in moments]
    assert rfc3339(1796013576.123) == "2026-11-30T04:39:36.123Z"
