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
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple

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
from common.domain.transitions import TERMINAL_STATES, TaskStatus

# Children one composite may have: enough for a real fan-out, small enough that a parent's
# tree is read in one round trip and its creation is one script.
MAX_CHILDREN = 10_000

# A document is stored as its parent's payload: it may hold many payloads, not unlimited ones.
DOCUMENT_PAYLOAD_FACTOR = 16

# What a reduce step may be given of its children's results (TASKLAB_INPUT is one environment
# string, which Linux caps at 128 KiB): each child's result is cut at RESULT_CUT_BYTES.
MAX_INPUT_BYTES = 120 * 1024
RESULT_CUT_BYTES = 4 * 1024
# The most TASKLAB_INPUT a child carries in its task and its dispatch, beside its payload: a map
# item (at most DEFAULT_MAX_PAYLOAD_BYTES, see parse_map_output) or a reduce step's input.
MAX_CHILD_INPUT_BYTES = max(DEFAULT_MAX_PAYLOAD_BYTES, MAX_INPUT_BYTES)

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


# -- what happens next: decide ------------------------------------------------------------------
# The coordinator reads a parent and its children, asks `decide` what to do, and carries the
# Plan out through the store's fenced writes. Everything it needs is in its arguments and it
# writes nothing, so every rule below is a row in a table test, and running it twice on the same
# state gives the same Plan: the store's writes (release only what is still WAITING, expand
# once, finish once) make applying that Plan a second time change nothing.

# A child in one of these has been released and has not ended: it counts for the cap.
ACTIVE_STATES = frozenset(
    {TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.DISPATCHED, TaskStatus.RUNNING}
)
# How a child counts against its parent's failure policy (SKIPPED is no failure: a DAG node
# whose rule could not hold did what its author asked).
FAILED_STATES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})


class Release(NamedTuple):
    """A WAITING child to put on the queue, with fields to set as it goes (a reduce's input)."""

    child_id: str
    fields: Mapping[str, str] = {}


class Finish(NamedTuple):
    """How the parent ends: SUCCESS with a result, or FAILED with an error. CANCELLED (or any
    final status the parent already has) only takes it off the active set."""

    status: TaskStatus
    result: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Plan:
    """What the coordinator is to do for one parent, in this order: `start` it (PENDING ->
    RUNNING); `expand` it with `new_children` (created WAITING, once); `skip` WAITING children
    (id, reason); `cancel` released children that have not ended (with `cancel_reason`);
    `release` WAITING children onto the queue; `finish` it."""

    start: bool = False
    expand: Literal["map", "broadcast"] | None = None
    new_children: list[Task] = field(default_factory=list)
    skip: list[tuple[str, str]] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    cancel_reason: str = ""
    release: list[Release] = field(default_factory=list)
    finish: Finish | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.start
            or self.expand
            or self.skip
            or self.cancel
            or self.release
            or self.finish is not None
        )

    def skips_by_reason(self) -> dict[str, list[str]]:
        """The skips grouped by reason, in order: the store skips a list with one reason."""
        out: dict[str, list[str]] = {}
        for child, reason in self.skip:
            out.setdefault(reason, []).append(child)
        return out


class CompositeStateError(ValueError):
    """A parent or its children in a state no composite takes (a parent on a queue)."""


def decide(
    spec: CompositeSpec,
    parent: Task,
    children: Sequence[Task],
    live_agents: Sequence[str] = (),
) -> Plan:
    """What happens next to a composite, given its parent and its children in listed order.

    `live_agents`: the agents a BROADCAST would run on now (live, not draining, running the
    template's task type); read only when a BROADCAST has no children of its own yet.
    """
    status = parent.status
    if status == TaskStatus.PENDING:
        return _decide_running(spec, parent, list(children), live_agents, start=True)
    if status == TaskStatus.RUNNING:
        return _decide_running(spec, parent, list(children), live_agents, start=False)
    if status in TERMINAL_STATES:
        return _wind_down(parent, children)
    raise CompositeStateError(
        f"composite {parent.task_id} is {status.value}: a parent is PENDING, RUNNING or final"
    )


def _wind_down(parent: Task, children: Sequence[Task]) -> Plan:
    """A parent that ended (a client cancelled it, or it finished and is still listed active):
    nothing of it may run on. WAITING children are skipped, released ones cancelled, and the
    parent is taken off the active set."""
    why = (
        "the composite was cancelled"
        if parent.status == TaskStatus.CANCELLED
        else f"the composite is {parent.status.value}"
    )
    return Plan(
        skip=[(c.task_id, why) for c in children if c.status == TaskStatus.WAITING],
        cancel=[c.task_id for c in children if c.status in ACTIVE_STATES],
        cancel_reason=why,
        finish=Finish(parent.status),
    )


def _is_reduce(child: Task) -> bool:
    return child.role == ChildRole.REDUCE.value


def _label(child: Task) -> str:
    return child.node or child.task_name


def _failure_text(failed: Sequence[Task], total: int) -> str:
    """ "2 of 5 children failed (first: resize [3/5]: exit code 1)": the first FAILED child in
    listed order is named rather than a CANCELLED one, which is often collateral."""
    first = next((c for c in failed if c.status == TaskStatus.FAILED), failed[0])
    why = first.error or first.status.value.lower()
    return f"{len(failed)} of {total} children failed (first: {_label(first)}: {why})"


def _success_text(body: Sequence[Task]) -> str:
    ok = sum(1 for c in body if c.status == TaskStatus.SUCCESS)
    text = f"{ok} of {len(body)} children succeeded"
    failed = sum(1 for c in body if c.status in FAILED_STATES)
    skipped = sum(1 for c in body if c.status == TaskStatus.SKIPPED)
    if failed:
        text += f", {failed} failed (tolerated)"
    if skipped:
        text += f", {skipped} skipped"
    return text


# --8<-- [start:running]
def _decide_running(
    spec: CompositeSpec,
    parent: Task,
    children: list[Task],
    live_agents: Sequence[str],
    start: bool,
) -> Plan:
    reduce = next((c for c in children if _is_reduce(c)), None)
    body = [c for c in children if not _is_reduce(c)]
    expand: Literal["map", "broadcast"] | None = None
    new: list[Task] = []

    def fail(error: str, why: str = "") -> Plan:
        # The composite cannot go on: nothing still waiting will ever run, nothing released
        # runs on (`why`: what the skipped and cancelled children are told).
        why = why or error
        return Plan(
            start=start,
            skip=[(c.task_id, why) for c in children if c.status == TaskStatus.WAITING],
            cancel=[c.task_id for c in children if c.status in ACTIVE_STATES],
            cancel_reason=why,
            finish=Finish(TaskStatus.FAILED, error=error),
        )

    # -- children created late: the map step's items, the broadcast's agents ------------------
    if spec.kind == CompositeKind.MAP_REDUCE:
        step = next((c for c in body if c.role == ChildRole.MAP.value), None)
        expanded = any(c.role == ChildRole.ITEM.value for c in body)
        if step is None:
            raise CompositeStateError(f"composite {parent.task_id} has no map step")
        if not expanded and step.status in TERMINAL_STATES:
            if step.status != TaskStatus.SUCCESS:
                # No items will ever exist: a tolerance of failed children (maxFailed) is about
                # items, and a reduce of nothing is not what the document asked for.
                return fail(f"the map step {step.status.value}: {step.error or 'no output'}")
            try:
                items = parse_map_output(step.result or "")
            except MapOutputError as exc:
                return fail(str(exc))
            expand, new = "map", item_children(parent, spec, items)
            body = body + new
    elif spec.kind == CompositeKind.BROADCAST:
        if not any(c.role == ChildRole.BROADCAST.value for c in body):
            assert spec.template is not None
            if not live_agents:
                return fail(
                    f"no live agent runs {spec.template.task_type.value} "
                    "(a broadcast runs once on each agent alive when it starts)"
                )
            expand, new = "broadcast", broadcast_children(parent, spec, live_agents)
            body = body + new

    policy = spec.policy
    total = len(body)
    failed = [c for c in body if c.status in FAILED_STATES]
    too_many = len(failed) > policy.max_failed

    # -- fail fast: the first failure beyond the tolerance ends it all ------------------------
    if too_many and policy.mode == FailureMode.FAIL_FAST:
        error = _failure_text(failed, total)
        return fail(error, "the composite failed fast: " + error)

    skip: list[tuple[str, str]] = []
    if spec.kind == CompositeKind.DAG:
        ready, skip = _dag_ready(spec, body)
    else:
        ready = [c for c in body if c.status == TaskStatus.WAITING]
    skipped_now = {child for child, _ in skip}

    # -- the cap: released children not ended count, the reduce step never does -------------
    active = sum(1 for c in body if c.status in ACTIVE_STATES)
    room = len(ready) if spec.parallelism is None else max(0, spec.parallelism - active)
    release = [Release(c.task_id) for c in ready[:room]]

    # -- every other child has ended: the reduce step, or the parent itself, is next ---------
    finish: Finish | None = None
    settled = not release and all(
        c.status in TERMINAL_STATES or c.task_id in skipped_now for c in body
    )
    if settled:
        if too_many:  # WAIT_ALL: every child had its chance
            error = _failure_text(failed, total)
            if reduce is not None and reduce.status == TaskStatus.WAITING:
                skip.append((reduce.task_id, error))
            finish = Finish(TaskStatus.FAILED, error=error)
        elif reduce is None:
            finish = Finish(TaskStatus.SUCCESS, result=_success_text(body))
        elif reduce.status == TaskStatus.WAITING:
            inputs = [c for c in body if c.role != ChildRole.MAP.value]
            try:
                release.append(Release(reduce.task_id, {"input": reduce_input(inputs)}))
            except ValueError as exc:
                skip.append((reduce.task_id, str(exc)))
                finish = Finish(TaskStatus.FAILED, error=str(exc))
        elif reduce.status == TaskStatus.SUCCESS:
            finish = Finish(TaskStatus.SUCCESS, result=reduce.result)
        elif reduce.status in TERMINAL_STATES:
            why = reduce.error or reduce.status.value.lower()
            error = f"the reduce step {reduce.status.value}: {why}"
            finish = Finish(TaskStatus.FAILED, error=error)
    return Plan(
        start=start, expand=expand, new_children=new, skip=skip, release=release, finish=finish
    )


# --8<-- [end:running]


def _dag_ready(spec: CompositeSpec, body: list[Task]) -> tuple[list[Task], list[tuple[str, str]]]:
    """A DAG's WAITING nodes whose trigger rule holds (listed order), and those whose rule can
    no longer hold, with why. Skips cascade in one pass (topological order): a node skipped now
    is seen as SKIPPED by its own downstream nodes."""
    by_name = {c.node: c for c in body if c.node}
    rules = {n.name: n for n in spec.nodes or []}
    state: dict[str, TaskStatus] = {name: c.status for name, c in by_name.items()}
    skip: list[tuple[str, str]] = []
    holds: set[str] = set()
    for name in _topological(spec.nodes or []):
        child = by_name.get(name)
        if child is None or child.status != TaskStatus.WAITING:
            continue
        node = rules[name]
        verdict, reason = _trigger(node, {up: state.get(up) for up in node.depends_on})
        if verdict == "skip":
            state[name] = TaskStatus.SKIPPED
            skip.append((child.task_id, reason))
        elif verdict == "run":
            holds.add(name)
    ready = [c for c in body if c.node in holds]
    return ready, skip


# --8<-- [start:trigger]
def _trigger(node: DagNode, ups: Mapping[str, TaskStatus | None]) -> tuple[str, str]:
    """("run" | "skip" | "wait", why) for one WAITING node, given its upstream nodes' states."""
    if not ups:
        return "run", ""
    ended = {n: s for n, s in ups.items() if s in TERMINAL_STATES}
    all_ended = len(ended) == len(ups)
    if node.trigger == TriggerRule.ALL_SUCCESS:
        for up, st in ended.items():
            if st != TaskStatus.SUCCESS:
                return "skip", f"upstream node {up!r} {st.value}"
        return ("run", "") if all_ended else ("wait", "")
    if node.trigger == TriggerRule.ALL_DONE:
        return ("run", "") if all_ended else ("wait", "")
    # ONE_FAILED: as soon as one upstream node failed; never if they all ended without one.
    if any(s in FAILED_STATES for s in ended.values()):
        return "run", ""
    if all_ended:
        names = ", ".join(repr(up) for up in ups)
        return "skip", f"upstream node(s) {names} ended without a failure (rule ONE_FAILED)"
    return "wait", ""


# --8<-- [end:trigger]


def _topological(nodes: Sequence[DagNode]) -> list[str]:
    """Node names, every node after its upstream nodes (Kahn; listed order among equals).
    Nodes on a cycle (refused at submit) come last, in listed order."""
    names = [n.name for n in nodes]
    known = set(names)
    waiting = {n.name: len({u for u in n.depends_on if u in known and u != n.name}) for n in nodes}
    downstream: dict[str, list[str]] = {}
    for n in nodes:
        for up in set(n.depends_on):
            if up in known and up != n.name:
                downstream.setdefault(up, []).append(n.name)
    queue = deque(name for name in names if waiting[name] == 0)
    order: list[str] = []
    while queue:
        name = queue.popleft()
        order.append(name)
        for down in downstream.get(name, []):
            waiting[down] -= 1
            if waiting[down] == 0:
                queue.append(down)
    placed = set(order)
    return order + [name for name in names if name not in placed]
