"""The manager's second failover signal: silence on the heartbeat topic, judged fairly."""

from common.messaging.manager import HeartbeatMonitor


def test_an_agent_silent_while_others_are_heard_is_failed_over_once_per_timeout():
    monitor = HeartbeatMonitor(timeout=2.0)
    monitor.beat("a", 0.0)
    for t in (1.0, 2.0, 3.0):
        monitor.beat("b", t)
    assert monitor.silent(1.5) == []
    assert monitor.silent(3.0) == ["a"]
    # Returned again only after another timeout, while it stays silent.
    assert monitor.silent(3.5) == []
    monitor.beat("b", 5.0)
    assert monitor.silent(5.0) == ["a"]


def test_nobody_is_failed_over_while_the_whole_bus_is_silent():
    # A broker restart: no heartbeat arrives from anyone, however long it takes.
    monitor = HeartbeatMonitor(timeout=2.0)
    monitor.beat("a", 0.0)
    monitor.beat("b", 0.1)
    assert monitor.silent(60.0) == []


def test_an_agent_that_beats_again_is_no_longer_silent():
    monitor = HeartbeatMonitor(timeout=1.0)
    monitor.beat("a", 0.0)
    for t in (0.5, 1.0, 1.5, 2.0):
        monitor.beat("b", t)
    assert monitor.silent(2.0) == ["a"]
    monitor.beat("a", 2.5)
    monitor.beat("b", 2.5)
    assert monitor.silent(3.0) == []


def test_an_agent_that_said_it_stops_is_forgotten():
    monitor = HeartbeatMonitor(timeout=1.0)
    monitor.beat("a", 0.0)
    monitor.forget("a")
    monitor.beat("b", 5.0)
    assert monitor.silent(5.0) == []


def test_after_the_whole_bus_was_silent_every_agent_gets_a_timeout_to_be_heard_again():
    # A broker restart: nobody is heard for ten seconds, then the agents reconnect one by one.
    monitor = HeartbeatMonitor(timeout=1.5)
    monitor.beat("a", 0.0)
    monitor.beat("b", 0.0)
    for t in (10.0, 10.5, 11.0):
        monitor.beat("a", t)
    assert monitor.silent(11.0) == []  # b is not back yet, but the bus is back only 1 s
    for t in (11.5, 12.0, 12.5):
        monitor.beat("a", t)
    assert monitor.silent(12.5) == ["b"]  # a whole timeout after the bus came back: due
