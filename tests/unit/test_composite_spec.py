"""The composite document: its validation, the children it stands for, a map step's output,
a reduce step's input, and a DAG's cycles."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain.composite import (
    MAX_CHILDREN,
    MAX_INPUT_BYTES,
    RESULT_CUT_BYTES,
    CompositeKind,
    CompositeSpec,
    DagNode,
    FailureMode,
    MapOutputError,
    broadcast_children,
    child_id,
    edges,
    find_cycle,
    initial_children,
    item_children,
    parse_map_output,
    reduce_input,
    validate_composite,
)
from common.domain.task import Task, TaskSpec, TaskType, TaskValidationError
from common.domain.transitions import TaskStatus

SHELL = {"taskType": "SHELL", "payload": "echo hi"}


def problems(doc) -> list[str]:
    with pytest.raises(TaskValidationError) as err:
        validate_composite(doc)
    return err.value.problems


def parent_of(spec: CompositeSpec) -> Task:
    return Task(
        task_id="22222222-2222-4222-8222-222222222222",
        task_name=spec.display_name(),
        task_type=TaskType.COMPOSITE,
        payload=spec.to_payload(),
        created_at=5.0,
    )


def node(name: str, *ups: str, trigger: str = "ALL_SUCCESS") -> dict:
    return {"name": name, "task": SHELL, "dependsOn": list(ups), "trigger": trigger}


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"kind": "SHARDS", "template": SHELL},
            ["completions: is required for a SHARDS composite"],
        ),
        (
            {"kind": "GROUP", "children": [SHELL], "completions": 3},
            ["completions: is not used by a GROUP composite"],
        ),
        (
            {"kind": "MAP_REDUCE", "template": SHELL},
            ["map: is required for a MAP_REDUCE composite"],
        ),
        ({"kind": "BROADCAST"}, ["template: is required for a BROADCAST composite"]),
        (
            {"kind": "DAG", "nodes": [node("a")], "reduce": SHELL},
            ["reduce: is not used by a DAG composite"],
        ),
        ({"kind": "GROUP", "children": []}, ["children: must list at least one task"]),
        ({"kind": "DAG", "nodes": []}, ["nodes: must list at least one node"]),
    ],
)
def test_each_kind_requires_its_fields_and_refuses_the_others(doc, expected):
    assert problems(doc) == expected


def test_every_problem_is_named_at_once_with_its_path():
    found = problems(
        {
            "kind": "GROUP",
            "children": [
                {"taskType": "COMPOSITE", "payload": "x"},
                {**SHELL, "requestId": "mine"},
                {"taskType": "HANDLER", "payload": "not json"},
            ],
            "completions": 2,
        }
    )
    assert found[0] == "completions: is not used by a GROUP composite"
    assert found[1].startswith("children.0.taskType: must be one of SHELL")
    assert found[2].startswith("children.1.requestId: a child has no requestId")
    assert found[3].startswith("children.2.payload: must be JSON")
    assert len(found) == 4
    # A document the model itself refuses names every field it refuses, with its path.
    found = problems({"kind": "GROUP", "children": [{"taskType": "SHELL", "payload": " "}, {}]})
    assert "children.0.payload: must not be blank" in found
    assert "children.1.taskType: is required" in found


def test_an_unknown_kind_and_an_unknown_field_are_refused():
    found = problems({"kind": "FANOUT", "tasks": []})
    assert any(p.startswith("kind:") for p in found) and "tasks: unknown field" in found


def test_a_document_that_is_no_object_is_refused():
    assert problems([1, 2]) == ["composite: must be a JSON object, got list"]


def test_a_document_over_its_size_limit_is_refused_as_too_large():
    with pytest.raises(TaskValidationError) as err:
        validate_composite({"kind": "GROUP", "children": [{**SHELL, "payload": "x" * 5000}]}, 256)
    assert err.value.too_large


def test_kinds_and_trigger_rules_are_read_in_any_case():
    spec = validate_composite(
        {"kind": "dag", "nodes": [node("a"), node("b", "a", trigger="all_done")]}
    )
    assert spec.kind == CompositeKind.DAG and spec.nodes[1].trigger.value == "ALL_DONE"


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([node("a"), node("a")], ["nodes.1.name: 'a' is already nodes.0's name"]),
        ([node("a", "ghost")], ["nodes.0.dependsOn.0: no node is named 'ghost'"]),
        (
            [node("a", "a")],
            ["nodes.0.dependsOn.0: a node cannot depend on itself"],
        ),
        ([node("a"), node("b", "a", "a")], ["nodes.1.dependsOn.1: 'a' is listed twice"]),
        (
            [node("a", "c"), node("b", "a"), node("c", "b")],
            ["nodes: the dependencies form a cycle: a -> b -> c -> a"],
        ),
    ],
)
def test_a_dags_bad_names_references_and_cycles_are_refused_with_a_clear_error(nodes, expected):
    assert problems({"kind": "DAG", "nodes": nodes}) == expected


def test_the_default_policy_is_fail_fast_but_wait_all_for_a_dag():
    shards = validate_composite({"kind": "SHARDS", "completions": 2, "template": SHELL})
    dag = validate_composite({"kind": "DAG", "nodes": [node("a")]})
    assert (shards.policy.mode, shards.policy.max_failed) == (FailureMode.FAIL_FAST, 0)
    assert dag.policy.mode == FailureMode.WAIT_ALL
    told = validate_composite(
        {"kind": "DAG", "nodes": [node("a")], "failurePolicy": {"mode": "FAIL_FAST"}}
    )
    assert told.policy.mode == FailureMode.FAIL_FAST


def test_a_document_survives_its_payload_round_trip_with_defaults_filled_in():
    spec = validate_composite({"kind": "DAG", "nodes": [node("a"), node("b", "a")]})
    again = CompositeSpec.from_payload(spec.to_payload())
    assert again == spec and json.loads(spec.to_payload())["nodes"][1]["trigger"] == "ALL_SUCCESS"
    assert edges(spec) == [("a", "b")]


# -- cycles ---------------------------------------------------------------------------------------


def dag_nodes(pairs: dict[str, list[str]]) -> list[DagNode]:
    return [
        DagNode(name=n, task=TaskSpec(**{"task_type": "SHELL", "payload": "x"}), depends_on=u)
        for n, u in pairs.items()
    ]


def test_a_chain_of_ten_thousand_nodes_is_checked_without_exhausting_the_stack():
    names = [f"n{i}" for i in range(MAX_CHILDREN)]
    nodes = dag_nodes({n: ([names[i - 1]] if i else []) for i, n in enumerate(names)})
    started = time.monotonic()
    assert find_cycle(nodes) is None
    assert time.monotonic() - started < 5
    # Closing the chain into a ring: the whole ring is the cycle.
    ring = dag_nodes({n: [names[i - 1]] for i, n in enumerate(names)})
    cycle = find_cycle(ring)
    assert cycle is not None and len(cycle) == MAX_CHILDREN + 1 and cycle[0] == cycle[-1]


def test_find_cycle_ignores_references_to_unknown_nodes():
    assert find_cycle(dag_nodes({"a": ["zz"], "b": ["a"]})) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), max_size=3), min_size=1, max_size=8))
def test_find_cycle_finds_a_real_cycle_exactly_when_there_is_one(ups):
    names = [f"n{i}" for i in range(len(ups))]
    pairs = {
        n: sorted({names[u] for u in us if u < len(names)})
        for n, us in zip(names, ups, strict=True)
    }
    cycle = find_cycle(dag_nodes(pairs))
    # Is there a cycle? Repeatedly remove nodes with no remaining upstream node.
    left = {n: set(us) - {n} for n, us in pairs.items()}
    while True:
        free = [n for n, us in left.items() if not us]
        if not free:
            break
        for n in free:
            del left[n]
        for us in left.values():
            us.difference_update(free)
    assert (cycle is not None) == bool(left), (pairs, cycle)
    if cycle:
        assert cycle[0] == cycle[-1]
        # Printed upstream first: each node depends on the one before it.
        for up, down in zip(cycle, cycle[1:], strict=False):
            assert up in pairs[down], (cycle, pairs)


# -- the children a document stands for ----------------------------------------------------------


def test_shards_are_waiting_children_indexed_from_zero_with_the_total():
    spec = validate_composite(
        {
            "kind": "SHARDS",
            "completions": 3,
            "template": {**SHELL, "retryCount": 2},
            "reduce": SHELL,
        }
    )
    parent = parent_of(spec)
    kids = initial_children(parent, spec)
    assert [(c.role, c.shard_index, c.shard_total) for c in kids] == [
        ("shard", 0, 3),
        ("shard", 1, 3),
        ("shard", 2, 3),
        ("reduce", 0, 1),
    ]
    assert all(c.status == TaskStatus.WAITING and c.parent_id == parent.task_id for c in kids)
    assert kids[0].retry_count == 2 and kids[0].task_name == "echo hi [0/3]"
    assert kids[1].task_id == child_id(parent.task_id, "shard/1")


def test_child_ids_are_the_same_every_time_they_are_derived():
    spec = validate_composite({"kind": "GROUP", "children": [SHELL, SHELL]})
    parent = parent_of(spec)
    assert [c.task_id for c in initial_children(parent, spec)] == [
        c.task_id for c in initial_children(parent, spec)
    ]
    assert child_id("p", "child/0") != child_id("q", "child/0")


def test_a_dag_child_carries_its_node_name_and_a_map_reduce_starts_with_its_map_step():
    dag = validate_composite({"kind": "DAG", "nodes": [node("fetch"), node("build", "fetch")]})
    assert [(c.role, c.node) for c in initial_children(parent_of(dag), dag)] == [
        ("node", "fetch"),
        ("node", "build"),
    ]
    mr = validate_composite(
        {"kind": "MAP_REDUCE", "map": SHELL, "template": SHELL, "reduce": SHELL}
    )
    assert [c.role for c in initial_children(parent_of(mr), mr)] == ["map", "reduce"]
    bc = validate_composite({"kind": "BROADCAST", "template": SHELL})
    assert initial_children(parent_of(bc), bc) == []


def test_items_carry_their_json_and_broadcast_children_their_agent_in_id_order():
    mr = validate_composite({"kind": "MAP_REDUCE", "map": SHELL, "template": SHELL})
    items = item_children(parent_of(mr), mr, ['"a"', "[1]"])
    assert [(c.input, c.shard_index, c.shard_total) for c in items] == [
        ('"a"', 0, 2),
        ("[1]", 1, 2),
    ]
    bc = validate_composite({"kind": "BROADCAST", "template": SHELL})
    kids = broadcast_children(parent_of(bc), bc, ["b", "a"])
    assert [(c.pinned_agent, c.shard_index) for c in kids] == [("a", 0), ("b", 1)]


# -- a map step's output ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "items"),
    [
        ("[1, 2, 3]", ["1", "2", "3"]),
        ('  ["a", {"k": [1]}]\n', ['"a"', '{"k":[1]}']),
        ('reading input\n42 lines\n["x", "y"]\n', ['"x"', '"y"']),
        ('["é"]', ['"é"']),
    ],
)
def test_a_map_steps_output_is_its_json_array_or_its_last_line(output, items):
    assert parse_map_output(output) == items


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "not a JSON array"),
        ("done", "not a JSON array"),
        ('{"a": 1}', "printed a JSON dict, not an array"),
        ("[]", "emitted no items"),
        (json.dumps(list(range(MAX_CHILDREN + 1))), f"over {MAX_CHILDREN}"),
        (json.dumps(["x" * 100]), "item 0 is over 50 bytes"),
    ],
)
def test_a_map_output_that_is_not_a_usable_array_says_why(output, message):
    with pytest.raises(MapOutputError, match=message):
        parse_map_output(output, max_item_bytes=50)


# -- a reduce step's input -------------------------------------------------------------------------


def test_a_reduce_input_lists_the_childrens_results_in_index_order_cut_when_long():
    spec = validate_composite({"kind": "SHARDS", "completions": 3, "template": SHELL})
    kids = initial_children(parent_of(spec), spec)
    results = ["a", "b" * (RESULT_CUT_BYTES + 10), None]
    kids = [
        c.model_copy(update={"status": TaskStatus.SUCCESS, "result": r})
        for c, r in zip(kids, results, strict=True)
    ]
    rows = json.loads(reduce_input(list(reversed(kids))))
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0] == {"index": 0, "taskId": kids[0].task_id, "status": "SUCCESS", "result": "a"}
    assert len(rows[1]["result"]) == RESULT_CUT_BYTES and rows[1]["truncated"] is True
    assert rows[2]["result"] == ""


def test_a_reduce_input_names_dag_nodes_and_refuses_to_exceed_its_limit():
    spec = validate_composite({"kind": "DAG", "nodes": [node("a")]})
    [kid] = initial_children(parent_of(spec), spec)
    assert json.loads(reduce_input([kid]))[0]["node"] == "a"
    many = validate_composite({"kind": "SHARDS", "completions": 40, "template": SHELL})
    kids = [
        c.model_copy(update={"result": "x" * RESULT_CUT_BYTES})
        for c in initial_children(parent_of(many), many)
    ]
    with pytest.raises(ValueError, match=f"over the {MAX_INPUT_BYTES}"):
        reduce_input(kids)
