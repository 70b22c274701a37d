"""Composite tasks: a parent whose state is derived from its children's.

Pattern: Composite. A client treats a parent like any task (submit it, watch it, cancel it,
retry it), while the platform runs its children: GROUP (children listed by hand), SHARDS (one
task N times, each told its index: Kubernetes' Indexed Job), MAP_REDUCE (a map step emits the
items, one child per item, then an optional reduce), BROADCAST (once on every agent alive when
it is scheduled) and DAG (named tasks with dependencies and trigger rules).

This module is the document a client submits, its validation (every problem at once, as for a
plain task), and the children a document stands for. What happens next, given the children's
states, is decided by `decide` (pure, so the rules are tested as tables) and carried out by the
coordinator in the scheduler's leader (common/scheduling/composite.py), with fenced scripts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationError, field_validator

from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskSpec,
    TaskValidationError,
    _problems,
    _Wire,
    shown,
    validate_spec,
)
from common.domain.transitions import TaskStatus

# Children one composite may have: enough for a real fan-out, small enough that a parent's
# tree is read in one round trip and its creation is one script.
MAX_CHILDREN = 10_000

# A document is stored as its parent's payload: it may hold many payloads, not unlimited ones.
DOCUMENT_PAYLOAD_FACTOR = 16

# What a reduce step may be given of its children's results (TASKLAB_INPUT is one environment
# string, which Linux caps at 128 KiB): each child's result is cut at RESULT_CUT_BYTES.
MAX_INPUT_BYTES = 120 * 1024
RESULT_CUT_BYTES = 4 * 1024

# Child ids are derived from the parent's id and the child's place in it (uuid5), so creating
# a parent's children twice (a coordinator that died half-way and a new leader that repeats
# it) creates each child once.
_CHILD_NAMESPACE = uuid.UUID("5b0f3f0e-6c1e-4c55-9a57-2f3d1c0a7e11")


class CompositeKind(StrEnum):
    GROUP = "GROUP"
    SHARDS = "SHARDS"
    MAP_REDUCE = "MAP_REDUCE"
    BROADCAST = "BROADCAST"
    DAG = "DAG"


class FailureMode(StrEnum):
    # At the first failure beyond `maxFailed`, cancel every unfinished child and fail.
    FAIL_FAST = "FAIL_FAST"
    # Let every child finish, then fail if more than `maxFailed` failed.
    WAIT_ALL = "WAIT_ALL"


class TriggerRule(StrEnum):
    """When a DAG node runs, given its upstream nodes (Airflow's names, without the case)."""

    ALL_SUCCESS = "ALL_SUCCESS"  # every upstream node succeeded (the default)
    ALL_DONE = "ALL_DONE"  # every upstream node ended, however
    ONE_FAILED = "ONE_FAILED"  # as soon as one upstream node failed (a clean-up, an alert)


class ChildRole(StrEnum):
    CHILD = "child"  # GROUP
    SHARD = "shard"  # SHARDS
    MAP = "map"  # MAP_REDUCE's map step
    ITEM = "item"  # MAP_REDUCE: one per item the map step emitted
    REDUCE = "reduce"
    NODE = "node"  # DAG
    BROADCAST = "broadcast"  # BROADCAST: one per agent


class FailurePolicy(_Wire):
    mode: FailureMode = FailureMode.FAIL_FAST
    max_failed: int = Field(default=0, ge=0, le=MAX_CHILDREN)


NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DagNode(_Wire):
    name: str = Field(pattern=NODE_NAME_PATTERN)
    task: TaskSpec
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_CHILDREN)
    trigger: TriggerRule = TriggerRule.ALL_SUCCESS

    @field_validator("trigger", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


# --8<-- [start:spec]
class CompositeSpec(_Wire):
    """A composite document, as a client submits it (camelCase JSON)."""

    kind: CompositeKind
    task_name: str = Field(default="", max_length=200)
    # One requestId for the whole composite: submitting it again gives the same parent.
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    # At most this many children released (queued or running) at once; None = no cap.
    parallelism: int | None = Field(default=None, ge=1, le=MAX_CHILDREN)
    # None: FAIL_FAST with no failure tolerated, except a DAG, which lets its other branches
    # run on (WAIT_ALL), as a ONE_FAILED node must be able to run after a failure.
    failure_policy: FailurePolicy | None = None
    # GROUP: the children, each a task of its own.
    children: list[TaskSpec] | None = Field(default=None, max_length=MAX_CHILDREN)
    # SHARDS: `template` run `completions` times, with TASKLAB_SHARD_INDEX 0..N-1.
    completions: int | None = Field(default=None, ge=1, le=MAX_CHILDREN)
    # SHARDS, MAP_REDUCE (one child per item, the item as TASKLAB_INPUT), BROADCAST.
    template: TaskSpec | None = None
    # MAP_REDUCE: the step whose output (a JSON array) is the list of items.
    map: TaskSpec | None = None
    # GROUP, SHARDS, MAP_REDUCE, BROADCAST: run once after every child, given their results.
    reduce: TaskSpec | None = None
    # DAG: the nodes and, through `dependsOn`, the edges.
    nodes: list[DagNode] | None = Field(default=None, max_length=MAX_CHILDREN)

    @field_validator("kind", mode="before")
    @classmethod
    def _upper_kind(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @property
    def policy(self) -> FailurePolicy:
        if self.failure_policy is not None:
            return self.failure_policy
        if self.kind == CompositeKind.DAG:
            return FailurePolicy(mode=FailureMode.WAIT_ALL)
        return FailurePolicy()

    def display_name(self) -> str:
        return self.task_name or f"{self.kind.value.lower()} composite"

    def to_payload(self) -> str:
        """The document as its parent stores it: canonical JSON, defaults included."""
        return json.dumps(
            self.model_dump(by_alias=True, exclude_none=True, mode="json"),
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_payload(cls, payload: str) -> CompositeSpec:
        return cls.model_validate_json(payload)


# --8<-- [end:spec]

# Which of the optional fields each kind requires (R) and allows (A); any other is refused.
_FIELDS: dict[CompositeKind, tuple[set[str], set[str]]] = {
    CompositeKind.GROUP: ({"children"}, {"reduce"}),
    CompositeKind.SHARDS: ({"completions", "template"}, {"reduce"}),
    CompositeKind.MAP_REDUCE: ({"map", "template"}, {"reduce"}),
    CompositeKind.BROADCAST: ({"template"}, {"reduce"}),
    CompositeKind.DAG: ({"nodes"}, set()),
}
_KIND_FIELDS = {"children", "completions", "template", "map", "reduce", "nodes"}


def _wire(name: str) -> str:
    return CompositeSpec.model_fields[name].alias or name


def validate_composite(
    data: Any, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> CompositeSpec:
    """Check a composite document; raise TaskValidationError naming every problem.

    Each task inside is checked as a plain submit checks it (its payload's size, a handler's
    call), its problems named by their path (`nodes.2.task.payload: ...`). A DAG's node names
    must be unique, every `dependsOn` must name a node, and the graph must have no cycle.
    """
    if not isinstance(data, dict):
        raise TaskValidationError([f"composite: must be a JSON object, got {type(data).__name__}"])
    size = len(json.dumps(data, ensure_ascii=False, default=str).encode())
    limit = DOCUMENT_PAYLOAD_FACTOR * max_payload_bytes
    if size > limit:
        raise TaskValidationError(
            [f"composite: {size} bytes is over the {limit}-byte limit of a document"],
            too_large=True,
        )
    try:
        spec = CompositeSpec.model_validate(data)
    except ValidationError as err:
        raise TaskValidationError(_problems(err)) from None
    problems: list[str] = []
    required, allowed = _FIELDS[spec.kind]
    for name in sorted(_KIND_FIELDS):
        present = getattr(spec, name) is not None
        if name in required and not present:
            problems.append(f"{_wire(name)}: is required for a {spec.kind.value} composite")
        elif present and name not in required | allowed:
            problems.append(f"{_wire(name)}: is not used by a {spec.kind.value} composite")
    too_large = False
    for path, task in _tasks_with_paths(spec):
        if task.request_id is not None:
            problems.append(
                f"{path}.requestId: a child has no requestId of its own "
                "(the composite's requestId covers all of it)"
            )
        try:
            validate_spec(
                task.model_dump(by_alias=True, exclude_none=True, mode="json"), max_payload_bytes
            )
        except TaskValidationError as exc:
            too_large = too_large or exc.too_large
            problems.extend(f"{path}.{p}" for p in exc.problems)
    if spec.kind == CompositeKind.GROUP and spec.children is not None and not spec.children:
        problems.append("children: must list at least one task")
    if spec.nodes is not None:
        problems.extend(dag_problems(spec.nodes))
    if problems:
        raise TaskValidationError(problems, too_large=too_large)
    return spec


def _tasks_with_paths(spec: CompositeSpec) -> Iterable[tuple[str, TaskSpec]]:
    for i, child in enumerate(spec.children or []):
        yield f"children.{i}", child
    for name in ("template", "map", "reduce"):
        task = getattr(spec, name)
        if task is not None:
            yield _wire(name), task
    for i, node in enumerate(spec.nodes or []):
        yield f"nodes.{i}.task", node.task


def dag_problems(nodes: Sequence[DagNode]) -> list[str]:
    """Duplicate names, unknown or self references, and every cycle's path, as problems."""
    if not nodes:
        return ["nodes: must list at least one node"]
    problems: list[str] = []
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.name in index:
            first = index[node.name]
            problems.append(f"nodes.{i}.name: {shown(node.name)} is already nodes.{first}'s name")
        else:
            index[node.name] = i
    for i, node in enumerate(nodes):
        seen: set[str] = set()
        for j, up in enumerate(node.depends_on):
            where = f"nodes.{i}.dependsOn.{j}"
            if up == node.name:
                problems.append(f"{where}: a node cannot depend on itself")
            elif up not in index:
                problems.append(f"{where}: no node is named {shown(up)}")
            elif up in seen:
                problems.append(f"{where}: {shown(up)} is listed twice")
            seen.add(up)
    cycle = find_cycle(nodes)
    if cycle:
        problems.append("nodes: the dependencies form a cycle: " + " -> ".join(cycle))
    return problems


def find_cycle(nodes: Sequence[DagNode]) -> list[str] | None:
    """One cycle (its names, first one repeated at the end), or None. Iterative, so a deep
    chain of 10 000 nodes cannot exhaust the stack."""
    ups = {n.name: [u for u in n.depends_on if u != n.name] for n in nodes}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in ups:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, i = stack.pop()
            if i == 0:
                state[name] = 1
                path.append(name)
            nexts = ups.get(name, [])
            if i < len(nexts):
                stack.append((name, i + 1))
                up = nexts[i]
                if up not in ups:
                    continue
                if state.get(up) == 1:
                    return [*path[path.index(up) :], up][::-1]
                if not state.get(up):
                    stack.append((up, 0))
            else:
                state[name] = 2
                path.pop()
    return None


def edges(spec: CompositeSpec) -> list[tuple[str, str]]:
    """A DAG's edges as (upstream node, downstream node), in document order."""
    return [(up, node.name) for node in spec.nodes or [] for up in node.depends_on]


# -- the children a document stands for --------------------------------------------------------


def child_id(parent_id: str, key: str) -> str:
    """The id of a parent's child, from its place in the parent (`shard/3`, `node/build`)."""
    return str(uuid.uuid5(_CHILD_NAMESPACE, f"{parent_id}/{key}"))


def _child(
    parent: Task,
    spec: TaskSpec,
    key: str,
    role: ChildRole,
    index: int,
    total: int,
    **extra: Any,
) -> Task:
    name = spec.with_default_name().task_name
    if role in (ChildRole.SHARD, ChildRole.ITEM, ChildRole.BROADCAST, ChildRole.CHILD):
        name = f"{name} [{index}/{total}]"
    return Task(
        task_id=child_id(parent.task_id, key),
        task_name=name[:200],
        task_type=spec.task_type,
        payload=spec.payload,
        execution_timeout=spec.execution_timeout,
        retry_count=spec.retry_count,
        status=TaskStatus.WAITING,
        created_at=parent.created_at,
        updated_at=parent.created_at,
        parent_id=parent.task_id,
        role=role.value,
        shard_index=index,
        shard_total=total,
        **extra,
    )


def initial_children(parent: Task, spec: CompositeSpec) -> list[Task]:
    """The children created with the parent, all WAITING, in the order they are listed.

    MAP_REDUCE's items and BROADCAST's children come later (`item_children`,
    `broadcast_children`), once the map step's output or the live agents are known; a reduce
    step is created now and given its input when it is released.
    """
    out: list[Task] = []
    if spec.kind == CompositeKind.GROUP:
        n = len(spec.children or [])
        out = [
            _child(parent, c, f"child/{i}", ChildRole.CHILD, i, n)
            for i, c in enumerate(spec.children or [])
        ]
    elif spec.kind == CompositeKind.SHARDS:
        assert spec.template is not None and spec.completions is not None
        n = spec.completions
        out = [_child(parent, spec.template, f"shard/{i}", ChildRole.SHARD, i, n) for i in range(n)]
    elif spec.kind == CompositeKind.MAP_REDUCE:
        assert spec.map is not None
        out = [_child(parent, spec.map, "map", ChildRole.MAP, 0, 1)]
    elif spec.kind == CompositeKind.DAG:
        nodes = spec.nodes or []
        out = [
            _child(parent, n.task, f"node/{n.name}", ChildRole.NODE, i, len(nodes), node=n.name)
            for i, n in enumerate(nodes)
        ]
    if spec.reduce is not None:
        out.append(_child(parent, spec.reduce, "reduce", ChildRole.REDUCE, 0, 1))
    return out


def item_children(parent: Task, spec: CompositeSpec, items: Sequence[str]) -> list[Task]:
    """MAP_REDUCE: one child per item the map step emitted (each item's JSON as its input)."""
    assert spec.template is not None
    n = len(items)
    return [
        _child(parent, spec.template, f"item/{i}", ChildRole.ITEM, i, n, input=item)
        for i, item in enumerate(items)
    ]


def broadcast_children(parent: Task, spec: CompositeSpec, agent_ids: Sequence[str]) -> list[Task]:
    """BROADCAST: one child per agent alive now, pinned to it, indexed in agent-id order."""
    assert spec.template is not None
    ids = sorted(agent_ids)
    n = len(ids)
    return [
        _child(
            parent,
            spec.template,
            f"broadcast/{agent}",
            ChildRole.BROADCAST,
            i,
            n,
            pinned_agent=agent,
        )
        for i, agent in enumerate(ids)
    ]


class MapOutputError(ValueError):
    """A map step's output that is not a JSON array of at most MAX_CHILDREN items."""


def parse_map_output(result: str, max_item_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> list[str]:
    """The items a map step emitted: its output is a JSON array (the whole output, or else its
    last non-empty line, so a map step may log before it prints the array). Each item is
    returned as compact JSON text, what its child gets as TASKLAB_INPUT."""
    text = result.strip()
    candidates = [text]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[-1].strip() != text:
        candidates.append(lines[-1].strip())
    data: Any = None
    for candidate in candidates:
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    else:
        raise MapOutputError(
            "the map step's output is not a JSON array (print one, as its last line)"
        )
    if not isinstance(data, list):
        raise MapOutputError(f"the map step printed a JSON {type(data).__name__}, not an array")
    if not data:
        raise MapOutputError("the map step emitted no items")
    if len(data) > MAX_CHILDREN:
        raise MapOutputError(f"the map step emitted {len(data)} items, over {MAX_CHILDREN}")
    items = [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in data]
    for i, item in enumerate(items):
        if len(item.encode()) > max_item_bytes:
            raise MapOutputError(f"item {i} is over {max_item_bytes} bytes as JSON")
    return items


def reduce_input(children: Sequence[Task]) -> str:
    """What a reduce step gets as TASKLAB_INPUT: its siblings' results, in index order, each
    result cut at RESULT_CUT_BYTES. Raises ValueError when even that is over MAX_INPUT_BYTES."""
    rows = []
    for child in sorted(children, key=lambda c: (c.role or "", c.shard_index or 0)):
        result = child.result or ""
        cut = result.encode()[:RESULT_CUT_BYTES].decode(errors="ignore")
        row: dict[str, Any] = {
            "index": child.shard_index,
            "taskId": child.task_id,
            "status": child.status.value,
            "result": cut,
        }
        if child.node:
            row["node"] = child.node
        if len(cut) < len(result):
            row["truncated"] = True
        rows.append(row)
    text = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise ValueError(
            f"the children's results take {len(text.encode())} bytes, over the "
            f"{MAX_INPUT_BYTES} a reduce step can be given; have children store large results "
            "elsewhere and return a reference"
        )
    return text


# -- the coordinator's view of a parent -----------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """How many of a parent's children are in each state."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def of(cls, children: Iterable[Task]) -> Progress:
        counts: dict[str, int] = {}
        for c in children:
            counts[c.status.value] = counts.get(c.status.value, 0) + 1
        return cls(counts)


@dataclass(frozen=True)
class CompositeTree:
    """A parent, its children in their listed order, and (for a DAG) its edges by child id."""

    parent: Task
    children: list[Task]
    edges: list[tuple[str, str]] = field(default_factory=list)

    @property
    def progress(self) -> Progress:
        return Progress.of(self.children)
