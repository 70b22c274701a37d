"""decide(): what a composite does next, given its parent and its children's states.

The rules are tables: each row gives the children's states as letters (W WAITING, P PENDING,
D DISPATCHED, R RUNNING, S SUCCESS, F FAILED, C CANCELLED, K SKIPPED) and the Plan expected.
The properties at the end run decide + apply on the in-memory store until the composite ends,
for random documents and random outcomes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.adapters.memory_composite import InMemoryCompositeStore
from common.coordination.agent_info import AgentInfo
from common.domain.composite import (
    ACTIVE_STATES,
    FAILED_STATES,
    MAX_INPUT_BYTES,
    CompositeStateError,
    Finish,
    Plan,
    Release,
    decide,
    initial_children,
    validate_composite,
)
from common.domain.task import Task, TaskType
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.scheduling.composite import CompositeCoordinator
from common.testing.fakes import InMemoryLiveAgents

S = TaskStatus
LETTERS = {
    "W": S.WAITING,
    "P": S.PENDING,
    "D": S.DISPATCHED,
    "R": S.RUNNING,
    "S": S.SUCCESS,
    "F": S.FAILED,
    "C": S.CANCELLED,
    "K": S.SKIPPED,
}
SHELL = {"taskType": "SHELL", "payload": "echo hi"}


def shards(n: int, parallelism: int | None = None, reduce: bool = False, **more):
    doc = {"kind": "SHARDS", "completions": n, "template": SHELL, **more}
    if parallelism is not None:
        doc["parallelism"] = parallelism
    if reduce:
        doc["reduce"] = {"taskType": "SHELL", "payload": "cat", "taskName": "sum"}
    return validate_composite(doc)


def diamond(trigger: str = "ALL_SUCCESS", **more):
    """a -> b, a -> c, (b, c) -> d, d's trigger rule given."""
    return validate_composite(
        {
            "kind": "DAG",
            "nodes": [
                {"name": "a", "task": SHELL},
                {"name": "b", "task": SHELL, "dependsOn": ["a"]},
                {"name": "c", "task": SHELL, "dependsOn": ["a"]},
                {"name": "d", "task": SHELL, "dependsOn": ["b", "c"], "trigger": trigger},
            ],
            **more,
        }
    )


def make_parent(spec, status: TaskStatus = S.RUNNING) -> Task:
    return Task(
        task_id="11111111-1111-4111-8111-111111111111",
        task_name=spec.display_name(),
        task_type=TaskType.COMPOSITE,
        payload=spec.to_payload(),
        status=status,
        created_at=1.0,
    )


def in_states(children: list[Task], letters: str, **fields) -> list[Task]:
    """The children in the states the letters give (spaces ignored); a FAILED child says why,
    a SUCCESS one prints its index."""
    letters = letters.replace(" ", "")
    assert len(letters) == len(children), (letters, len(children))
    out = []
    for child, letter in zip(children, letters, strict=True):
        status = LETTERS[letter]
        extra = dict(fields)
        if status == S.FAILED:
            extra.setdefault("error", "boom")
        if status == S.SUCCESS:
            extra.setdefault("result", f"r{child.shard_index}")
        out.append(child.model_copy(update={"status": status, **extra}))
    return out


def world(spec, letters: str, parent_status: TaskStatus = S.RUNNING):
    parent = make_parent(spec, parent_status)
    return parent, in_states(initial_children(parent, spec), letters)


def released(plan: Plan, children: list[Task]) -> list[int]:
    """The released children by their place in the list."""
    ids = [c.task_id for c in children]
    return [ids.index(r.child_id) for r in plan.release]


def places(ids, children: list[Task]) -> list[int]:
    where = [c.task_id for c in children]
    return [where.index(i) for i in ids]


# -- the parallelism cap -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parallelism", "letters", "expected"),
    [
        (2, "WWWWW", [0, 1]),
        (2, "RWWWW", [1]),
        (2, "PDWWW", []),
        (2, "RRWWW", []),
        (2, "SRWWW", [2]),
        (2, "SSSWW", [3, 4]),
        (3, "SSSSW", [4]),
        (1, "SSSSS", []),
        (None, "WWWWW", [0, 1, 2, 3, 4]),
        (None, "SRWWW", [2, 3, 4]),
        (10, "WWWWW", [0, 1, 2, 3, 4]),
    ],
)
def test_waiting_children_are_released_in_listed_order_while_the_cap_has_room(
    parallelism, letters, expected
):
    spec = shards(5, parallelism)
    parent, children = world(spec, letters)
    plan = decide(spec, parent, children)
    assert released(plan, children) == expected
    assert plan.skip == [] and plan.cancel == []


def test_a_pending_parent_is_started_and_its_first_children_released_in_one_plan():
    spec = shards(3, 2)
    parent, children = world(spec, "WWW", S.PENDING)
    plan = decide(spec, parent, children)
    assert plan.start is True and released(plan, children) == [0, 1]
    assert decide(spec, parent.model_copy(update={"status": S.RUNNING}), children).start is False


def test_every_child_succeeded_without_a_reduce_step_finishes_with_a_summary():
    spec = shards(3)
    parent, children = world(spec, "SSS")
    plan = decide(spec, parent, children)
    assert plan.finish == Finish(S.SUCCESS, result="3 of 3 children succeeded")
    assert plan.release == []


def test_a_plan_for_a_running_composite_with_nothing_to_do_is_empty():
    spec = shards(3, 1)
    parent, children = world(spec, "SRW")
    assert decide(spec, parent, children).empty


# -- the failure policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "parallelism", "letters", "released_", "cancelled", "skipped", "finish"),
    [
        # FAIL_FAST, nothing tolerated (the default): the first failure ends it.
        (None, 2, "FRWWW", [], [1], [2, 3, 4], "FAILED"),
        (None, 2, "CSRWW", [], [2], [3, 4], "FAILED"),
        # One tolerated: the first failure is not enough.
        ({"maxFailed": 1}, 2, "FRWWW", [2], [], [], None),
        ({"maxFailed": 1}, 2, "FFRWW", [], [2], [3, 4], "FAILED"),
        ({"maxFailed": 1}, 2, "FSSSS", [], [], [], "SUCCESS"),
        # WAIT_ALL: every child gets its chance, then the verdict.
        ({"mode": "WAIT_ALL"}, 2, "FRWWW", [2], [], [], None),
        ({"mode": "WAIT_ALL"}, 2, "FSSSR", [], [], [], None),
        ({"mode": "WAIT_ALL"}, 2, "FSSSF", [], [], [], "FAILED"),
        ({"mode": "WAIT_ALL", "maxFailed": 2}, 2, "FSSSF", [], [], [], "SUCCESS"),
        ({"mode": "WAIT_ALL", "maxFailed": 1}, 2, "FSSSC", [], [], [], "FAILED"),
    ],
)
def test_failures_beyond_max_failed_end_the_composite_by_its_policy(
    policy, parallelism, letters, released_, cancelled, skipped, finish
):
    spec = shards(5, parallelism, **({"failurePolicy": policy} if policy else {}))
    parent, children = world(spec, letters)
    plan = decide(spec, parent, children)
    assert released(plan, children) == released_
    assert places(plan.cancel, children) == cancelled
    assert places([c for c, _ in plan.skip], children) == skipped
    assert (plan.finish.status.value if plan.finish else None) == finish


def test_fail_fast_names_the_failure_count_and_the_first_failed_child():
    spec = shards(4, 4)
    parent, children = world(spec, "SFRC")
    plan = decide(spec, parent, children)
    # The FAILED child is named, not the CANCELLED one (often a casualty of a cancel).
    assert plan.finish == Finish(
        S.FAILED, error="2 of 4 children failed (first: echo hi [1/4]: boom)"
    )
    assert plan.cancel_reason.startswith("the composite failed fast: 2 of 4 children failed")


def test_a_tolerated_failure_is_told_in_the_summary():
    spec = shards(3, failurePolicy={"mode": "WAIT_ALL", "maxFailed": 1})
    parent, children = world(spec, "SFS")
    result = decide(spec, parent, children).finish.result
    assert result == "2 of 3 children succeeded, 1 failed (tolerated)"


# -- the reduce step ---------------------------------------------------------------------------


def test_the_reduce_step_is_released_last_with_its_siblings_results_and_outside_the_cap():
    spec = shards(3, 1, reduce=True)
    parent, children = world(spec, "SSS W")
    plan = decide(spec, parent, children)
    [release] = plan.release
    assert release.child_id == children[3].task_id
    rows = json.loads(release.fields["input"])
    assert [(r["index"], r["result"], r["status"]) for r in rows] == [
        (0, "r0", "SUCCESS"),
        (1, "r1", "SUCCESS"),
        (2, "r2", "SUCCESS"),
    ]
    assert plan.finish is None


@pytest.mark.parametrize(
    ("letters", "expected"),
    [
        ("SSR W", None),  # a child still runs: the reduce waits
        ("SSS R", None),  # the reduce runs
        ("SSS P", None),
    ],
)
def test_the_reduce_step_waits_for_every_other_child_and_the_parent_for_it(letters, expected):
    spec = shards(3, 3, reduce=True)
    parent, children = world(spec, letters)
    plan = decide(spec, parent, children)
    assert plan.release == [] and plan.finish == expected


def test_the_parent_ends_as_its_reduce_step_ends():
    spec = shards(2, reduce=True)
    parent, children = world(spec, "SS S")
    children[2] = children[2].model_copy(update={"result": "total 42"})
    assert decide(spec, parent, children).finish == Finish(S.SUCCESS, result="total 42")
    parent, children = world(spec, "SS F")
    assert decide(spec, parent, children).finish == Finish(
        S.FAILED, error="the reduce step FAILED: boom"
    )


def test_a_failing_composite_skips_its_reduce_step():
    spec = shards(3, 3, reduce=True)
    parent, children = world(spec, "FRS W")
    plan = decide(spec, parent, children)
    assert places([c for c, _ in plan.skip], children) == [3]
    assert plan.finish.status == S.FAILED
    spec = shards(3, 3, reduce=True, failurePolicy={"mode": "WAIT_ALL"})
    parent, children = world(spec, "FSS W")
    plan = decide(spec, parent, children)
    assert plan.skip == [
        (children[3].task_id, "1 of 3 children failed (first: echo hi [0/3]: boom)")
    ]
    assert plan.finish.status == S.FAILED and plan.release == []


def test_results_too_large_for_the_reduce_step_fail_the_composite_and_skip_it():
    spec = shards(40, reduce=True)
    parent, children = world(spec, "S" * 40 + "W")
    children = [
        c.model_copy(update={"result": "x" * 4000}) if c.role == "shard" else c for c in children
    ]
    plan = decide(spec, parent, children)
    assert plan.release == []
    [(skipped, reason)] = plan.skip
    assert skipped == children[-1].task_id and f"over the {MAX_INPUT_BYTES}" in reason
    assert plan.finish == Finish(S.FAILED, error=reason)


# -- a DAG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "letters", "released_", "skipped", "finish"),
    [
        ("ALL_SUCCESS", "WWWW", "a", {}, None),
        ("ALL_SUCCESS", "SWWW", "bc", {}, None),
        ("ALL_SUCCESS", "SRWW", "c", {}, None),
        ("ALL_SUCCESS", "SSRW", "", {}, None),
        ("ALL_SUCCESS", "SSSW", "d", {}, None),
        ("ALL_SUCCESS", "SSSS", "", {}, "SUCCESS"),
        # A failed node skips what needs its success, down the graph, in one plan.
        (
            "ALL_SUCCESS",
            "FWWW",
            "",
            {
                "b": "upstream node 'a' FAILED",
                "c": "upstream node 'a' FAILED",
                "d": "upstream node 'b' SKIPPED",
            },
            "FAILED",
        ),
        # The other branch runs on (a DAG is WAIT_ALL by default); d cannot hold any more.
        ("ALL_SUCCESS", "SFRW", "", {"d": "upstream node 'b' FAILED"}, None),
        ("ALL_SUCCESS", "SFSW", "", {"d": "upstream node 'b' FAILED"}, "FAILED"),
        ("ALL_SUCCESS", "SCSW", "", {"d": "upstream node 'b' CANCELLED"}, "FAILED"),
        ("ALL_DONE", "SFRW", "", {}, None),
        ("ALL_DONE", "SFSW", "d", {}, None),
        ("ALL_DONE", "SKSW", "d", {}, None),
        # ONE_FAILED: as soon as one upstream node failed, without waiting for the other.
        ("ONE_FAILED", "SFRW", "d", {}, None),
        ("ONE_FAILED", "SSRW", "", {}, None),
        (
            "ONE_FAILED",
            "SSSW",
            "",
            {"d": "upstream node(s) 'b', 'c' ended without a failure (rule ONE_FAILED)"},
            "SUCCESS",
        ),
    ],
)
def test_a_dag_node_runs_or_is_skipped_by_its_trigger_rule(
    trigger, letters, released_, skipped, finish
):
    spec = diamond(trigger)
    parent, children = world(spec, letters)
    plan = decide(spec, parent, children)
    by_id = {c.task_id: c.node for c in children}
    assert "".join(by_id[r.child_id] for r in plan.release) == released_
    assert {by_id[c]: why for c, why in plan.skip} == skipped
    assert (plan.finish.status.value if plan.finish else None) == finish


def test_a_dag_with_a_failed_node_and_a_one_failed_clean_up_fails_after_the_clean_up():
    spec = diamond("ONE_FAILED")
    parent, children = world(spec, "SFSS")
    plan = decide(spec, parent, children)
    assert plan.finish == Finish(S.FAILED, error="1 of 4 children failed (first: b: boom)")


def test_a_dags_cap_holds_its_ready_nodes_back_in_listed_order():
    spec = diamond(parallelism=1)
    parent, children = world(spec, "SWWW")
    plan = decide(spec, parent, children)
    assert [children[places([r.child_id], children)[0]].node for r in plan.release] == ["b"]


def test_a_dag_told_to_fail_fast_cancels_the_other_branch():
    spec = diamond(failurePolicy={"mode": "FAIL_FAST"})
    parent, children = world(spec, "SFRW")
    plan = decide(spec, parent, children)
    assert places(plan.cancel, children) == [2]
    assert places([c for c, _ in plan.skip], children) == [3]
    assert plan.finish.status == S.FAILED


def test_dag_nodes_listed_before_their_upstream_nodes_still_cascade_in_one_plan():
    spec = validate_composite(
        {
            "kind": "DAG",
            "nodes": [
                {"name": "z", "task": SHELL, "dependsOn": ["y"]},
                {"name": "y", "task": SHELL, "dependsOn": ["x"]},
                {"name": "x", "task": SHELL},
            ],
        }
    )
    parent, children = world(spec, "WWF")
    plan = decide(spec, parent, children)
    assert [why for _, why in plan.skip] == [
        "upstream node 'x' FAILED",
        "upstream node 'y' SKIPPED",
    ]
    assert plan.finish.status == S.FAILED


# -- map and reduce ------------------------------------------------------------------------------


def map_reduce(parallelism: int | None = None, reduce: bool = True):
    doc = {
        "kind": "MAP_REDUCE",
        "map": {"taskType": "PYTHON_SCRIPT", "payload": "print([1, 2, 3])", "taskName": "split"},
        "template": {"taskType": "PYTHON_SCRIPT", "payload": "import os"},
    }
    if reduce:
        doc["reduce"] = {"taskType": "PYTHON_SCRIPT", "payload": "pass", "taskName": "sum"}
    if parallelism:
        doc["parallelism"] = parallelism
    return validate_composite(doc)


def test_the_map_step_runs_first_and_the_reduce_waits():
    spec = map_reduce()
    parent, children = world(spec, "WW")
    plan = decide(spec, parent, children)
    assert released(plan, children) == [0] and plan.expand is None


def test_a_succeeded_map_step_expands_into_one_child_per_item_released_by_the_cap():
    spec = map_reduce(parallelism=2)
    parent, children = world(spec, "SW")
    children[0] = children[0].model_copy(update={"result": 'reading\n["a", {"n": 2}, 3]\n'})
    plan = decide(spec, parent, children)
    assert plan.expand == "map"
    assert [(c.role, c.shard_index, c.shard_total, c.input) for c in plan.new_children] == [
        ("item", 0, 3, '"a"'),
        ("item", 1, 3, '{"n":2}'),
        ("item", 2, 3, "3"),
    ]
    assert all(c.status == S.WAITING for c in plan.new_children)
    assert [r.child_id for r in plan.release] == [c.task_id for c in plan.new_children[:2]]


def test_a_map_output_that_is_no_array_fails_the_composite_and_skips_the_reduce():
    spec = map_reduce()
    parent, children = world(spec, "SW")
    children[0] = children[0].model_copy(update={"result": "done"})
    plan = decide(spec, parent, children)
    assert plan.expand is None and plan.new_children == []
    error = "the map step's output is not a JSON array (print one, as its last line)"
    assert plan.finish == Finish(S.FAILED, error=error)
    assert plan.skip == [(children[1].task_id, error)]


def test_a_failed_map_step_fails_the_composite_whatever_it_tolerates():
    spec = map_reduce()
    spec = spec.model_copy(update={"failure_policy": None})
    parent, children = world(spec, "FW")
    plan = decide(spec, parent, children)
    assert plan.finish == Finish(S.FAILED, error="the map step FAILED: boom")


def test_the_reduce_of_a_map_reduce_is_given_the_items_results_not_the_maps():
    spec = map_reduce()
    parent, children = world(spec, "SW")
    children[0] = children[0].model_copy(update={"result": "[1, 2]"})
    items = decide(spec, parent, children).new_children
    children = [children[0], *in_states(items, "SS"), children[1]]
    [release] = decide(spec, parent, children).release
    rows = json.loads(release.fields["input"])
    assert [r["taskId"] for r in rows] == [items[0].task_id, items[1].task_id]


def test_an_expanded_map_reduce_does_not_expand_again():
    spec = map_reduce()
    parent, children = world(spec, "SW")
    children[0] = children[0].model_copy(update={"result": "[1]"})
    items = decide(spec, parent, children).new_children
    children = [children[0], *in_states(items, "R"), children[1]]
    plan = decide(spec, parent, children)
    assert plan.expand is None and plan.empty


# -- broadcast -----------------------------------------------------------------------------------


def broadcast():
    return validate_composite({"kind": "BROADCAST", "template": SHELL})


def test_a_broadcast_expands_into_one_child_pinned_to_each_live_agent_at_its_first_tick():
    spec = broadcast()
    parent = make_parent(spec, S.PENDING)
    plan = decide(spec, parent, [], live_agents=["a2", "a1"])
    assert plan.start and plan.expand == "broadcast"
    assert [(c.pinned_agent, c.shard_index, c.shard_total) for c in plan.new_children] == [
        ("a1", 0, 2),
        ("a2", 1, 2),
    ]
    assert [r.child_id for r in plan.release] == [c.task_id for c in plan.new_children]


def test_a_broadcast_with_no_live_agent_fails():
    spec = broadcast()
    plan = decide(spec, make_parent(spec, S.PENDING), [], live_agents=[])
    assert plan.finish.status == S.FAILED and plan.finish.error.startswith(
        "no live agent runs SHELL"
    )


def test_an_expanded_broadcast_ignores_agents_that_joined_since():
    spec = broadcast()
    parent = make_parent(spec)
    kids = decide(spec, parent, [], live_agents=["a1"]).new_children
    plan = decide(spec, parent, in_states(kids, "R"), live_agents=["a1", "a9"])
    assert plan.empty


# -- a parent that ended -------------------------------------------------------------------------


def test_a_cancelled_parent_stops_what_it_released_skips_what_waits_and_leaves_the_active_set():
    spec = shards(4, 2)
    parent, children = world(spec, "RDSW", S.CANCELLED)
    plan = decide(spec, parent, children)
    assert places(plan.cancel, children) == [0, 1]
    assert plan.skip == [(children[3].task_id, "the composite was cancelled")]
    assert plan.finish == Finish(S.CANCELLED) and plan.release == []


def test_a_parent_in_a_state_no_parent_takes_is_an_error():
    spec = shards(2)
    parent, children = world(spec, "WW", S.SCHEDULED)
    with pytest.raises(CompositeStateError, match="SCHEDULED"):
        decide(spec, parent, children)


def test_deciding_twice_on_the_same_state_gives_the_same_plan():
    spec = diamond("ONE_FAILED")
    parent, children = world(spec, "SFRW")
    assert decide(spec, parent, children) == decide(spec, parent, children)


def test_a_release_is_a_child_id_with_fields_to_set():
    assert Release("x") == ("x", {}) and Release("x", {"input": "[]"}).fields == {"input": "[]"}


# -- properties: decide + apply until the end ----------------------------------------------------


@st.composite
def documents(draw):
    """A random document of each kind (a DAG's nodes depend on earlier ones only, so it is
    acyclic), with a random cap and failure policy."""
    kind = draw(st.sampled_from(["SHARDS", "GROUP", "DAG", "MAP_REDUCE", "BROADCAST"]))
    n = draw(st.integers(1, 8))
    doc: dict = {"kind": kind}
    if kind == "SHARDS":
        doc |= {"completions": n, "template": SHELL}
    elif kind == "MAP_REDUCE":
        # The map step prints n items (run_one gives it that output).
        doc |= {"map": {"taskType": "SHELL", "payload": f"seq {n}"}, "template": SHELL}
    elif kind == "BROADCAST":
        doc["template"] = SHELL
    elif kind == "GROUP":
        doc["children"] = [{**SHELL, "taskName": f"c{i}"} for i in range(n)]
    else:
        nodes = []
        for i in range(n):
            ups = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
            trigger = draw(st.sampled_from(["ALL_SUCCESS", "ALL_DONE", "ONE_FAILED"]))
            nodes.append(
                {
                    "name": f"n{i}",
                    "task": SHELL,
                    "dependsOn": [f"n{u}" for u in ups],
                    "trigger": trigger,
                }
            )
        doc["nodes"] = nodes
    if draw(st.booleans()):
        doc["parallelism"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        doc["failurePolicy"] = {
            "mode": draw(st.sampled_from(["FAIL_FAST", "WAIT_ALL"])),
            "maxFailed": draw(st.integers(0, 2)),
        }
    if kind != "DAG" and draw(st.booleans()):
        doc["reduce"] = {"taskType": "SHELL", "payload": "cat"}
    return validate_composite(doc)


def agent(agent_id: str) -> AgentInfo:
    return AgentInfo(agent_id=agent_id, capacity=2, task_types=["SHELL"])


def rule_held(node, states: dict[str, TaskStatus]) -> bool:
    ups = [states[u] for u in node.depends_on]
    if not ups:
        return True  # a root node runs at once, whatever its rule
    if node.trigger.value == "ALL_SUCCESS":
        return all(s == S.SUCCESS for s in ups)
    if node.trigger.value == "ALL_DONE":
        return all(s in TERMINAL_STATES for s in ups)
    return any(s in FAILED_STATES for s in ups)


def run_one(store: InMemoryCompositeStore, task_id: str, outcome: TaskStatus) -> None:
    """What an agent does with a released child: run it, then report."""
    tasks = store.store
    task = tasks.get(task_id)
    # With the epoch of the leader that released it, as its dispatch entry carries.
    at = {"attempt": task.attempt, "epoch": task.epoch, "actor": "agent"}
    assert tasks.transition(task_id, S.RUNNING, **at).accepted
    result = "ok"
    if task.role == "map":
        result = json.dumps(list(range(int(task.payload.split()[1]))))
    fields = {"result": result} if outcome == S.SUCCESS else {"error": "boom"}
    assert tasks.transition(task_id, outcome, fields=fields, **at).accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=documents(), data=st.data())
def test_any_composite_ends_with_every_child_final_the_cap_held_and_no_node_released_early(
    spec, data
):
    store = InMemoryCompositeStore()
    store.store.fence = 1
    agents = [agent(f"a{i}") for i in range(data.draw(st.integers(0, 3)))]
    coordinator = CompositeCoordinator(store, InMemoryLiveAgents(*agents), "scheduler:test")
    parent, _ = store.submit_composite(spec)
    pid = parent.task_id
    rules = {n.name: n for n in spec.nodes or []}
    for _step in range(200):
        before = {c.task_id: c for c in store.tree(pid).children}
        coordinator.coordinate(pid, 1)
        tree = store.tree(pid)
        # The upstream states the release was decided on, with the skips of the same plan
        # (a skip cascades within one plan, and is applied before the releases).
        states = {c.node: c.status for c in tree.children if c.node}
        for child in tree.children:
            # A child added by this tick's expand was WAITING before it, as created.
            was = before[child.task_id].status if child.task_id in before else S.WAITING
            if was == S.WAITING and child.status == S.PENDING and child.node:
                assert rule_held(rules[child.node], states), (child.node, states)
        body = [c for c in tree.children if c.role != "reduce"]
        active = sum(1 for c in body if c.status in ACTIVE_STATES)
        assert spec.parallelism is None or active <= spec.parallelism
        if pid not in store.active_parents():
            break
        runnable = [c.task_id for c in tree.children if c.status == S.PENDING]
        if runnable:
            chosen = data.draw(st.lists(st.sampled_from(runnable), min_size=1, unique=True))
            for task_id in chosen:
                outcome = data.draw(st.sampled_from([S.SUCCESS, S.SUCCESS, S.FAILED]))
                run_one(store, task_id, outcome)
    else:
        pytest.fail("the composite did not end in 200 ticks")
    tree = store.tree(pid)
    assert tree.parent.status in (S.SUCCESS, S.FAILED)
    assert all(c.status in TERMINAL_STATES for c in tree.children), tree.progress
    # Applying once more changes nothing: the parent is off the active set and no write follows.
    writes = dict(store.writes)
    coordinator.tick(1)
    assert store.writes == writes


@settings(max_examples=100, deadline=None)
@given(spec=documents(), data=st.data())
def test_deciding_again_after_applying_a_plan_never_releases_or_expands_twice(spec, data):
    store = InMemoryCompositeStore()
    coordinator = CompositeCoordinator(store, InMemoryLiveAgents(), "scheduler:test")
    parent, _ = store.submit_composite(spec)
    pid = parent.task_id
    for _step in range(50):
        coordinator.coordinate(pid, 0)
        tree = store.tree(pid)
        # The same state decided again: whatever was released is no longer WAITING.
        again = decide(spec, tree.parent, tree.children)
        assert not (set(r.child_id for r in again.release) - waiting_ids(tree.children))
        assert again.start is False and again.expand is None
        if pid not in store.active_parents():
            break
        for c in tree.children:
            if c.status == S.PENDING:
                run_one(store, c.task_id, data.draw(st.sampled_from([S.SUCCESS, S.FAILED])))


def waiting_ids(children: list[Task]) -> set[str]:
    return {c.task_id for c in children if c.status == S.WAITING}
