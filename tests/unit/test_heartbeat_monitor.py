"""The manager's second failover signal: silence on the heartbeat topic, judged fairly."""

from common.messaging.manager import HeartbeatMonitor


def beat_every_half_second(monitor: HeartbeatMonitor, agent: str, start: float, end: float):
    t = start
    while t <= end:
        monitor.beat(agent, t)
        t += 0.5


def test_an_agent_silent_while_others_are_heard_is_failed_over_once_per_timeout():
    monitor = HeartbeatMonitor(timeout=1.0)
    beat_every_half_second(monitor, "a", 0.0, 3.0)
    beat_every_half_second(monitor, "b", 0.0, 4.0)
    assert monitor.silent(3.5) == []  # a was heard 0.5 s ago
    beat_every_half_second(monitor, "b", 4.5, 4.5)
    assert monitor.silent(4.5) == ["a"]
    # Returned again only after another timeout, while it stays silent.
    assert monitor.silent(5.0) == []
    beat_every_half_second(monitor, "b", 5.0, 5.5)
    assert monitor.silent(5.5) == ["a"]


def test_nobody_is_failed_over_while_the_whole_bus_is_silent():
    # A broker restart: no heartbeat arrives from anyone, however long it takes.
    monitor = HeartbeatMonitor(timeout=2.0)
    monitor.beat("a", 0.0)
    monitor.beat("b", 0.1)
    assert monitor.silent(60.0) == []


def test_an_agent_that_beats_again_is_no_longer_silent():
    monitor = HeartbeatMonitor(timeout=1.0)
    beat_every_half_second(monitor, "a", 0.0, 2.0)
    beat_every_half_second(monitor, "b", 0.0, 4.0)
    assert monitor.silent(4.0) == ["a"]
    beat_every_half_second(monitor, "a", 4.5, 5.0)
    beat_every_half_second(monitor, "b", 4.5, 5.0)
    assert monitor.silent(5.0) == []


def test_right_after_the_manager_starts_nobody_is_failed_over_for_two_timeouts():
    # The manager has just begun to read: an agent it has not heard from yet is not silent.
    monitor = HeartbeatMonitor(timeout=1.0)
    monitor.beat("a", 0.0)
    beat_every_half_second(monitor, "b", 0.0, 1.5)
    assert monitor.silent(1.5) == []
    beat_every_half_second(monitor, "b", 2.0, 2.5)
    assert monitor.silent(2.5) == ["a"]


def test_an_agent_that_said_it_stops_is_forgotten():
    monitor = HeartbeatMonitor(timeout=1.0)
    monitor.beat("a", 0.0)
    monitor.forget("a")
    monitor.beat("b", 5.0)
    assert monitor.silent(5.0) == []


def test_after_the_whole_bus_was_silent_every_agent_gets_two_timeouts_to_be_heard_again():
    # A broker restart: nobody is heard for ten seconds, then the agents reconnect one by one.
    monitor = HeartbeatMonitor(timeout=1.5)
    monitor.beat("a", 0.0)
    monitor.beat("b", 0.0)
    for t in (10.0, 10.5, 11.0, 11.5, 12.0, 12.5):
        monitor.beat("a", t)
    assert monitor.silent(12.5) == []  # b is not back yet, but the bus is back only 2.5 s
    for t in (13.0, 13.5):
        monitor.beat("a", t)
    assert monitor.silent(13.5) == ["b"]  # two timeouts after the bus came back: due
