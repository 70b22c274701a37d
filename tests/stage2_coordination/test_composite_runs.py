"""Composite tasks run by the real stage 2 roles: a scheduler whose leader coordinates the
parents, agents that run the children, and agents that die in the middle.

Each child records what it did in the probe's runs file (`done <index> <attempt>`, `start` and
`end` times), so a test can tell a child that ran twice from one that was retried after its
agent was killed: only a run the platform lost may repeat, and its history says so.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from common import keys
from common.adapters.redis_composite import RedisCompositeStore
from common.domain.composite import validate_composite
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.testing.wait import eventually

ACTIVE = {"PENDING", "SCHEDULED", "DISPATCHED", "RUNNING"}


@pytest.fixture
def composites(redis_client) -> RedisCompositeStore:
    return RedisCompositeStore(redis_client)


def submit(composites: RedisCompositeStore, document: dict):
    parent, created = composites.submit_composite(validate_composite(document))
    assert created
    return parent


def final_tree(composites, parent_id: str, timeout: float, what: str):
    def done():
        tree = composites.tree(parent_id)
        return tree if tree.parent.status in TERMINAL_STATES else None

    return eventually(done, timeout, interval=0.1, message=what)


def lost_attempts(history: list[dict]) -> set[int]:
    """Attempts that ended because their agent was lost (the failover's PENDING entry names
    the attempt it starts, so the lost one is that minus one)."""
    return {
        h["attempt"] - 1
        for h in history
        if h["state"] == "PENDING" and h.get("from") in ("RUNNING", "DISPATCHED")
    }


# -- map-reduce ----------------------------------------------------------------------------------

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks and the fox runs",
    "a lazy afternoon for a brown dog",
    "quick quick quick said the fox",
    "over and over the dog sleeps",
    "the end of the story of the fox",
    "brown leaves fall over the lazy river",
    "and the river runs to the sea",
]

MAP_STEP = f"""
import json
lines = {TEXT!r}
print("splitting", len(lines), "lines")
print(json.dumps([{{"line": line}} for line in lines]))
"""

# A shard counts the words of its line; it takes a moment, so an agent can be killed under it.
SHARD_STEP = """
import collections, json, os, time
runs = {runs!r}
item = json.loads(os.environ["TASKLAB_INPUT"])
index, attempt = os.environ["TASKLAB_SHARD_INDEX"], os.environ["TASKLAB_ATTEMPT"]
with open(runs, "a") as f:
    f.write(f"start {{index}} {{attempt}}\\n")
time.sleep(0.8)
counts = collections.Counter(item["line"].split())
with open(runs, "a") as f:
    f.write(f"done {{index}} {{attempt}}\\n")
print(json.dumps(counts, sort_keys=True))
"""

REDUCE_STEP = """
import collections, json, os
runs = {runs!r}
with open(runs, "a") as f:
    f.write("reduce\\n")
total = collections.Counter()
for row in json.loads(os.environ["TASKLAB_INPUT"]):
    total.update(json.loads(row["result"]))
print(json.dumps(dict(sorted(total.items()))))
"""


def test_a_map_reduce_word_count_survives_an_agent_killed_mid_run(
    scheduler, agent, probe, composites
):
    # Given a leader and three agents with two slots each
    scheduler("sched-a")
    agents = {name: agent(name, capacity=2) for name in ("agent-1", "agent-2", "agent-3")}
    eventually(lambda: len(probe.live_agents()) == 3, 15, message="agents registered")
    runs = str(probe.runs_file)

    # When a word count over eight lines is submitted as a map-reduce
    parent = submit(
        composites,
        {
            "kind": "MAP_REDUCE",
            "taskName": "word count",
            "map": {"taskType": "PYTHON_SCRIPT", "payload": MAP_STEP},
            "template": {
                "taskType": "PYTHON_SCRIPT",
                "payload": SHARD_STEP.format(runs=runs),
                "retryCount": 1,
            },
            "reduce": {"taskType": "PYTHON_SCRIPT", "payload": REDUCE_STEP.format(runs=runs)},
        },
    )

    # and an agent is killed -9 while it runs shards
    def busy_agent():
        counts = Counter()
        tree = composites.tree(parent.task_id)
        for child in tree.children:
            if child.role == "item" and child.status == TaskStatus.RUNNING and child.agent_id:
                counts[child.agent_id] += 1
        return counts.most_common(1)[0][0] if counts else None

    victim = eventually(busy_agent, 60, interval=0.02, message="an agent running shards")
    agents[victim].kill()

    # Then the parent succeeds with the right counts
    tree = final_tree(composites, parent.task_id, 90, "the word count finished")
    assert tree.parent.status == TaskStatus.SUCCESS, (tree.parent.error, tree.progress)
    expected = Counter(word for line in TEXT for word in line.split())
    assert json.loads(tree.parent.result) == dict(sorted(expected.items()))

    # and every shard succeeded once: a second run only for an attempt lost with the agent
    items = [c for c in tree.children if c.role == "item"]
    assert sorted(c.shard_index for c in items) == list(range(len(TEXT)))
    done = Counter()
    for line in probe.runs_file.read_text().splitlines():
        if line.startswith("done "):
            _, index, attempt = line.split()
            done[(int(index), int(attempt))] += 1
    for child in items:
        assert child.status == TaskStatus.SUCCESS, (child.shard_index, child.error)
        history = probe.history(child.task_id)
        assert done[(child.shard_index, child.attempt)] == 1, (child.shard_index, history)
        for index, attempt in done:
            if index == child.shard_index and attempt != child.attempt:
                assert attempt in lost_attempts(history), (index, attempt, history)
    # the killed agent really was running shards, and they were run again elsewhere
    assert any(lost_attempts(probe.history(c.task_id)) for c in items)
    # and the reduce ran exactly once
    assert probe.runs()["reduce"] == 1


# -- a diamond DAG with a failing node ---------------------------------------------------------


def node(name: str, command: str, *depends_on: str, trigger: str | None = None) -> dict:
    out: dict = {"name": name, "task": {"taskType": "SHELL", "payload": command}}
    if depends_on:
        out["dependsOn"] = list(depends_on)
    if trigger:
        out["trigger"] = trigger
    return out


def test_a_diamond_dag_with_a_failing_node_ends_every_node_by_its_rule(
    scheduler, agent, probe, composites
):
    # Given a leader and two agents
    scheduler("sched-a")
    agent("agent-1", capacity=2)
    agent("agent-2", capacity=2)
    eventually(lambda: len(probe.live_agents()) == 2, 15, message="agents registered")

    # When a diamond is submitted whose left branch fails:
    #   a -> b (fails), a -> c;  b, c -> d (ALL_SUCCESS);  b -> alert (ONE_FAILED);
    #   d -> report (ALL_DONE)
    parent = submit(
        composites,
        {
            "kind": "DAG",
            "taskName": "diamond",
            "nodes": [
                node("a", "echo a"),
                node("b", "echo b; exit 3", "a"),
                node("c", "echo c", "a"),
                node("d", "echo d", "b", "c"),
                node("alert", "echo alert", "b", trigger="ONE_FAILED"),
                node("report", "echo report", "d", trigger="ALL_DONE"),
            ],
        },
    )

    # Then nothing is left waiting, and each node ended by its rule
    tree = final_tree(composites, parent.task_id, 60, "the DAG finished")
    by_name = {c.node: c for c in tree.children}
    assert {n: c.status.value for n, c in by_name.items()} == {
        "a": "SUCCESS",
        "b": "FAILED",
        "c": "SUCCESS",
        "d": "SKIPPED",
        "alert": "SUCCESS",
        "report": "SUCCESS",
    }
    skipped = [h for h in probe.history(by_name["d"].task_id) if h["state"] == "SKIPPED"]
    assert len(skipped) == 1 and "'b'" in skipped[0].get("reason", ""), skipped
    # the parent failed, because a node failed and none was tolerated
    assert tree.parent.status == TaskStatus.FAILED
    # and no node started before its upstream nodes had ended
    spans = {}
    for name, child in by_name.items():
        history = probe.history(child.task_id)
        started = [h["at"] for h in history if h["state"] in ("PENDING",) and h.get("from")]
        ended = [h["at"] for h in history if h["state"] in {s.value for s in TERMINAL_STATES}]
        spans[name] = (min(started) if started else None, max(ended))
    upstream = {"b": "a", "c": "a", "alert": "b", "report": "d"}
    for name, up in upstream.items():
        if spans[name][0] is not None:
            assert float(spans[name][0]) >= float(spans[up][1]), (name, up, spans)
    # and the edges are part of the tree, by child id
    ids = {c.node: c.task_id for c in tree.children}
    assert (ids["b"], ids["d"]) in set(tree.edges) and (ids["c"], ids["d"]) in set(tree.edges)


# -- broadcast ---------------------------------------------------------------------------------


def test_a_broadcast_runs_once_on_each_agent_alive_when_it_was_scheduled(
    scheduler, agent, probe, composites
):
    # Given three agents
    scheduler("sched-a")
    for name in ("agent-1", "agent-2", "agent-3"):
        agent(name, capacity=1)
    eventually(lambda: len(probe.live_agents()) == 3, 15, message="agents registered")
    runs = str(probe.runs_file)

    # When a broadcast is scheduled, and a fourth agent joins while its children run
    parent = submit(
        composites,
        {
            "kind": "BROADCAST",
            "taskName": "rotate logs",
            "template": {
                "taskType": "SHELL",
                "payload": f'echo "ran $TASKLAB_SHARD_INDEX/$TASKLAB_SHARD_TOTAL" >> {runs}; '
                "sleep 1",
            },
        },
    )
    eventually(
        lambda: len(composites.tree(parent.task_id).children) == 3,
        15,
        message="three broadcast children",
    )
    agent("agent-4", capacity=1)
    eventually(lambda: len(probe.live_agents()) == 4, 15, message="agent-4 registered")

    # Then each of the three ran it once, with its own index; the late agent did not
    tree = final_tree(composites, parent.task_id, 30, "the broadcast finished")
    assert tree.parent.status == TaskStatus.SUCCESS, tree.parent.error
    assert sorted(c.agent_id for c in tree.children) == ["agent-1", "agent-2", "agent-3"]
    assert all(c.pinned_agent == c.agent_id for c in tree.children)
    assert sorted(probe.runs_file.read_text().split()[1::2]) == ["0/3", "1/3", "2/3"]
    assert len(tree.children) == 3


# -- the parallelism cap under load, with agents dying --------------------------------------------


@pytest.mark.slow
def test_the_parallelism_cap_holds_under_load_while_agents_die(
    scheduler, agent, probe, composites, redis_client
):
    # Given four agents with three slots each: four times more room than the cap
    scheduler("sched-a")
    agents = {f"agent-{i}": agent(f"agent-{i}", capacity=3) for i in range(1, 5)}
    eventually(lambda: len(probe.live_agents()) == 4, 15, message="agents registered")
    runs = str(probe.runs_file)

    # When 30 shards are submitted with parallelism 3
    cap, total = 3, 30
    parent = submit(
        composites,
        {
            "kind": "SHARDS",
            "taskName": "capped",
            "completions": total,
            "parallelism": cap,
            "template": {
                "taskType": "SHELL",
                "payload": f'echo "$TASKLAB_SHARD_INDEX $TASKLAB_ATTEMPT" >> {runs}; sleep 0.3',
                "retryCount": 2,
            },
        },
    )
    child_ids = composites.children(parent.task_id)

    # and the children's states are sampled while two agents are killed under them
    peak, samples, stop = [0], [0], threading.Event()

    def sample():
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            pipe = redis_client.pipeline(transaction=False)
            for tid in child_ids:
                pipe.hget(keys.task(tid), "status")
            active = sum(1 for s in pipe.execute() if s and s.decode() in ACTIVE)
            peak[0] = max(peak[0], active)
            samples[0] += 1
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for victim, after in (("agent-1", 5), ("agent-2", 15)):
            eventually(
                lambda after=after: probe.statuses(child_ids)["SUCCESS"] >= after,
                60,
                message=f"{after} shards done",
            )
            agents[victim].kill()
        tree = final_tree(composites, parent.task_id, 120, "every shard finished")
    finally:
        stop.set()
        sampler.join(5)

    # Then every shard succeeded, and the cap was reached but never exceeded
    assert tree.parent.status == TaskStatus.SUCCESS, (tree.parent.error, tree.progress)
    assert samples[0] > 50
    assert peak[0] == cap, peak
    ran = Counter(line.split()[0] for line in probe.runs_file.read_text().splitlines())
    assert set(ran) == {str(i) for i in range(total)}
