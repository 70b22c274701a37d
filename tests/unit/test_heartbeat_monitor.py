"""The manager's second failover signal: silence on the heartbeat topic, judged fairly.

Agents "a" and "b" beat on partitions 0 and 1 (heartbeats are keyed by agentId). Unless a test
says otherwise, the monitor owns both partitions from long before the test's time 0.
"""

from dataclasses import dataclass

from common.messaging.heartbeat_monitor import HeartbeatMonitor, RebalanceFeed

PARTITION = {"a": 0, "b": 1, "c": 2}


def owning(*partitions: int, timeout: float, since: float = -100.0) -> HeartbeatMonitor:
    monitor = HeartbeatMonitor(timeout=timeout)
    monitor.assigned(partitions or (0, 1, 2), since)
    return monitor


def beat_every_half_second(monitor: HeartbeatMonitor, agent: str, start: float, end: float):
    t = start
    while t <= end:
        monitor.beat(agent, PARTITION[agent], t)
        t += 0.5


def test_an_agent_silent_while_others_are_heard_is_failed_over_once_per_timeout():
    monitor = owning(timeout=1.0)
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
    monitor = owning(timeout=2.0)
    monitor.beat("a", PARTITION["a"], 0.0)
    monitor.beat("b", PARTITION["b"], 0.1)
    assert monitor.silent(60.0) == []


def test_an_agent_that_beats_again_is_no_longer_silent():
    monitor = owning(timeout=1.0)
    beat_every_half_second(monitor, "a", 0.0, 2.0)
    beat_every_half_second(monitor, "b", 0.0, 4.0)
    assert monitor.silent(4.0) == ["a"]
    beat_every_half_second(monitor, "a", 4.5, 5.0)
    beat_every_half_second(monitor, "b", 4.5, 5.0)
    assert monitor.silent(5.0) == []


def test_right_after_the_manager_starts_nobody_is_failed_over_for_two_timeouts():
    # The manager has just begun to read: an agent it has not heard from yet is not silent.
    monitor = owning(timeout=1.0)
    monitor.beat("a", PARTITION["a"], 0.0)
    beat_every_half_second(monitor, "b", 0.0, 1.5)
    assert monitor.silent(1.5) == []
    beat_every_half_second(monitor, "b", 2.0, 2.5)
    assert monitor.silent(2.5) == ["a"]


def test_an_agent_that_said_it_stops_is_forgotten():
    monitor = owning(timeout=1.0)
    monitor.beat("a", PARTITION["a"], 0.0)
    monitor.forget("a")
    monitor.beat("b", PARTITION["b"], 5.0)
    assert monitor.silent(5.0) == []


def test_after_the_whole_bus_was_silent_every_agent_gets_two_timeouts_to_be_heard_again():
    # A broker restart: nobody is heard for ten seconds, then the agents reconnect one by one.
    monitor = owning(timeout=1.5)
    monitor.beat("a", PARTITION["a"], 0.0)
    monitor.beat("b", PARTITION["b"], 0.0)
    for t in (10.0, 10.5, 11.0, 11.5, 12.0, 12.5):
        monitor.beat("a", PARTITION["a"], t)
    assert monitor.silent(12.5) == []  # b is not back yet, but the bus is back only 2.5 s
    for t in (13.0, 13.5):
        monitor.beat("a", PARTITION["a"], t)
    assert monitor.silent(13.5) == ["b"]  # two timeouts after the bus came back: due


# -- several managers: only the partitions this manager owns, owned long enough --------------
def test_an_agent_whose_partition_moved_to_another_manager_is_never_failed_over_here():
    # Given a manager reading both agents' heartbeats
    monitor = owning(timeout=1.0)
    beat_every_half_second(monitor, "a", 0.0, 2.0)
    beat_every_half_second(monitor, "b", 0.0, 2.0)
    # When a second manager joins and takes partition 0 (a's): a's beats stop arriving here
    monitor.revoked([0])
    beat_every_half_second(monitor, "b", 2.5, 30.0)
    # Then a, alive but read elsewhere, is never judged silent here, however long
    assert all(monitor.silent(t / 2) == [] for t in range(5, 61))
    assert monitor.watched() == {"b": 1}


def test_a_newly_assigned_partition_is_not_judged_until_it_has_been_owned_for_a_grace():
    # Given a manager that owns partition 1 (b) and is given partition 0 (a) at time 10
    monitor = owning(1, timeout=1.0)
    beat_every_half_second(monitor, "b", 0.0, 10.0)
    monitor.assigned([0], 10.0)
    # When a is heard once right after (the backlog since the last commit), then not again
    monitor.beat("a", 0, 10.1)
    beat_every_half_second(monitor, "b", 10.5, 12.0)
    # Then it is not judged during the grace of two timeouts from the assignment
    assert monitor.silent(11.5) == []
    assert monitor.silent(12.0) == []
    # and is judged silent once the grace is over and it stays silent beyond the timeout
    beat_every_half_second(monitor, "b", 12.5, 12.5)
    assert monitor.silent(12.5) == ["a"]


def test_an_agent_never_heard_since_its_partition_was_assigned_is_left_to_zookeeper():
    # Given a manager that heard a, lost a's partition, and got it back at time 5
    monitor = owning(timeout=1.0)
    monitor.beat("a", 0, 0.0)
    monitor.revoked([0])
    monitor.assigned([0], 5.0)
    # When only b is heard from then on
    beat_every_half_second(monitor, "b", 0.0, 30.0)
    # Then a is never judged: what was known of it predates this ownership
    assert all(monitor.silent(t / 2) == [] for t in range(10, 61))


def test_an_assignment_forgets_what_was_known_of_the_partition_before():
    # An eager rebalance revokes everything and assigns it again: the old times are stale.
    monitor = owning(timeout=1.0)
    monitor.beat("a", 0, 0.0)
    beat_every_half_second(monitor, "b", 0.0, 3.0)
    monitor.assigned([0, 1], 3.0)
    assert monitor.watched() == {}
    beat_every_half_second(monitor, "b", 3.5, 30.0)
    assert all(monitor.silent(t / 2) == [] for t in range(8, 61))


def test_a_silent_agent_on_an_owned_partition_is_still_failed_over_after_a_rebalance():
    # The fix must not blind the monitor: an agent that dies after being heard here is caught.
    monitor = owning(timeout=1.0)
    monitor.revoked([0, 1])
    monitor.assigned([0, 1], 10.0)
    beat_every_half_second(monitor, "a", 10.0, 14.0)  # a dies after 14.0
    beat_every_half_second(monitor, "b", 10.0, 16.0)
    assert monitor.silent(15.0) == []
    assert monitor.silent(16.0) == ["a"]


@dataclass
class TopicPartition:
    topic: str
    partition: int


def test_the_rebalance_feed_passes_on_only_the_heartbeat_topics_partitions():
    monitor = owning(timeout=1.0)
    feed = RebalanceFeed(monitor, "ns.agent-heartbeat-topic", clock=lambda: 50.0)
    monitor.beat("a", 0, 49.0)
    monitor.beat("b", 1, 49.0)
    feed.revoked([TopicPartition("ns.task-logs-topic", 1), TopicPartition("ns.task-logs-topic", 0)])
    assert monitor.watched() == {"a": 0, "b": 1}
    feed.revoked([TopicPartition("ns.agent-heartbeat-topic", 0)])
    assert monitor.watched() == {"b": 1}
    feed.assigned([TopicPartition("ns.agent-heartbeat-topic", 1)])
    assert monitor.watched() == {}
