"""The scheduler's view of /live-agents, on a real ZooKeeper: it follows agents until stopped."""

from __future__ import annotations

from kazoo.retry import KazooRetry

from common.coordination.live_agents import LiveAgentsView
from common.coordination.paths import agent_node
from common.coordination.zk import RetryingClient
from common.testing import eventually


def test_a_stopped_view_neither_reports_nor_fails_over_agents_that_leave_after_it(zk):
    # Given a view following two agents, as a scheduler's does, and a witness view on the same
    # client: kazoo runs both watches on one event thread, so once the witness has seen an
    # event, the other view has been handed it too.
    client = RetryingClient(zk, KazooRetry(max_tries=3))
    view, witness = LiveAgentsView(client), LiveAgentsView(client)
    departed: list[set[str]] = []
    view.on_departure(departed.append)
    for agent in ("agent-1", "agent-2"):
        zk.create(agent_node(agent), b'{"agentId": "%s"}' % agent.encode())
    view.start()
    witness.start()
    eventually(lambda: view.ids() == {"agent-1", "agent-2"}, message="both agents seen")
    zk.delete(agent_node("agent-1"))
    eventually(lambda: departed == [{"agent-1"}], message="the first departure reported")

    # When the scheduler stops, then the other agent leaves (a clean-up stops them together)
    view.stop()
    zk.delete(agent_node("agent-2"))
    eventually(lambda: witness.ids() == set(), message="the witness saw agent-2 leave")

    # Then no departure is reported after the stop: nothing is failed over by a stopped leader
    assert departed == [{"agent-1"}]
    assert view.ids() == {"agent-2"}  # the view froze where it stopped
