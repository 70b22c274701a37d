"""Runbooks as tests: run the marked command blocks of a Markdown page, in order, in one shell.

In the spirit of dapr's mechanical-markdown. A stage README shows real commands with their real
output; an HTML comment just above a fenced block (invisible on the rendered page) says what the
test suite does with it:

    <!-- runbook: step name="submit and wait" timeout=30
    expect: status:   SUCCESS
    expect: re:^taskId:\\s+[0-9a-f-]{36}$
    capture: TASK = re:^taskId:\\s+(\\S+)$ replaces 45aac2c0-5118-4b74-8613-62d711f301e8
    await: tasklab status => re:^status:\\s+SUCCESS
    -->

- `step` runs each `$ ` command of the block in one long-lived bash (variables, `cd`, `$!` and
  exports carry over from block to block, as in the reader's terminal), each with a timeout.
  `slow` steps run only when slow steps are asked for.
- `expect:` a line of output, a literal (the whole line, blanks at either end ignored) or `re:` a
  regular expression searched in a line. The expected lines must appear in order, in the real
  output **and** in the output the page shows: a page that drifts from the code fails either way.
- `capture: NAME = re:...` takes the first group of the first matching output line into the
  shell variable NAME; `replaces LITERAL` also puts the value in place of LITERAL (a task id or
  PID printed on the page) in every later command. The page's own output must capture LITERAL.
- `await: TEXT => re:...` re-runs the block's first command containing TEXT (which must only
  read) until a line of its output matches: for facts that become true a moment later.
- `skip covered-by="tests/x.py::test_y"` or `skip why="..."`: a block not run here; every
  block with `$ ` commands must be marked one way or the other, and a covering test must exist.

Background processes (`cmd &`) are noted after every command (`jobs -p`) and stopped by PID at
the end, SIGTERM then SIGKILL; so is the shell itself.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_MARKER = re.compile(r"<!--\s*runbook:(.*?)-->", re.S)
_DIRECTIVE = re.compile(r"^\s*[\w-]+:")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")


class RunbookError(AssertionError):
    """A runbook that cannot be parsed, or whose run does not show what its page says."""


@dataclass(frozen=True)
class Expect:
    text: str

    @property
    def is_regex(self) -> bool:
        return self.text.startswith("re:")

    def matches(self, line: str) -> bool:
        if self.is_regex:
            return re.search(self.text[3:], line) is not None
        return line.strip() == self.text.strip()


@dataclass(frozen=True)
class Capture:
    name: str
    pattern: str
    replaces: str | None = None

    def find(self, lines: Iterable[str]) -> str | None:
        for line in lines:
            found = re.search(self.pattern, line)
            if found:
                return found.group(1)
        return None


@dataclass(frozen=True)
class Await:
    command_contains: str
    pattern: str


@dataclass(frozen=True)
class Command:
    text: str
    shown_output: tuple[str, ...]


@dataclass
class Block:
    """One fenced block of the page and its marker."""

    kind: str  # "step" or "skip"
    line: int  # where the fence opens, 1-based
    name: str = ""
    slow: bool = False
    timeout: float = 30.0
    covered_by: str = ""
    why: str = ""
    expects: list[Expect] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    awaits: list[Await] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    @property
    def shown_output(self) -> list[str]:
        return [line for c in self.commands for line in c.shown_output]

    def where(self) -> str:
        return f"block at line {self.line}" + (f" ({self.name!r})" if self.name else "")


@dataclass
class Runbook:
    path: Path
    blocks: list[Block]
    unmarked: list[int]  # lines of `$ ` blocks nobody said to run or skip

    @property
    def steps(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "step"]


def _attributes(header: str, where: str) -> tuple[str, dict[str, str]]:
    try:
        words = shlex.split(header)
    except ValueError as exc:
        raise RunbookError(f"{where}: cannot read the marker: {exc}") from None
    if not words:
        raise RunbookError(f"{where}: a marker needs a kind (step or skip)")
    kind, attrs = words[0], {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        attrs[key] = value if _ else "true"
    return kind, attrs


def _marker(body: str, line: int) -> Block:
    where = f"marker at line {line}"
    lines = body.strip().splitlines() or [""]
    # The kind and its attributes may span lines; the directives (`word: ...`) follow them.
    split = next((n for n, t in enumerate(lines) if n and _DIRECTIVE.match(t)), len(lines))
    header, rest = " ".join(lines[:split]), lines[split:]
    kind, attrs = _attributes(header, where)
    if kind not in ("step", "skip"):
        raise RunbookError(f"{where}: unknown kind {kind!r} (step or skip)")
    known = {"step": {"name", "slow", "timeout"}, "skip": {"covered-by", "why"}}[kind]
    unknown = set(attrs) - known
    if unknown:
        raise RunbookError(f"{where}: unknown attribute(s) {', '.join(sorted(unknown))}")
    block = Block(
        kind,
        line,
        name=attrs.get("name", ""),
        slow=attrs.get("slow") == "true",
        timeout=float(attrs.get("timeout", 30)),
        covered_by=attrs.get("covered-by", ""),
        why=attrs.get("why", ""),
    )
    if kind == "step" and not block.name:
        raise RunbookError(f"{where}: a step needs name=")
    if kind == "skip" and not (block.covered_by or block.why):
        raise RunbookError(f"{where}: a skipped block says covered-by= or why=")
    for text in (r.strip() for r in rest):
        if not text:
            continue
        directive, _, value = text.partition(":")
        value = value.strip()
        if kind == "skip":
            raise RunbookError(f"{where}: a skipped block takes no {directive}:")
        if directive == "expect" and value:
            block.expects.append(Expect(value))
        elif directive == "capture":
            block.captures.append(_capture(value, where))
        elif directive == "await":
            command, sep, pattern = value.partition("=>")
            if not sep or not pattern.strip().startswith("re:"):
                raise RunbookError(f"{where}: write await: COMMAND TEXT => re:PATTERN")
            block.awaits.append(Await(command.strip(), pattern.strip()[3:]))
        else:
            raise RunbookError(f"{where}: unknown directive {text!r}")
    return block


def _capture(value: str, where: str) -> Capture:
    found = re.fullmatch(r"(\w+)\s*=\s*re:(.*?)(?:\s+replaces\s+(\S+))?", value)
    if not found:
        raise RunbookError(f"{where}: write capture: NAME = re:PATTERN [replaces LITERAL]")
    name, pattern, replaces = found.groups()
    if re.compile(pattern).groups != 1:
        raise RunbookError(f"{where}: capture {name}: the pattern needs exactly one group")
    return Capture(name, pattern, replaces)


def _commands(lines: list[str]) -> list[Command]:
    """`$ ` lines are commands (a trailing backslash continues one); the rest is their output."""
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1  # output before any command: nothing to attach it to
            continue
        text = [lines[i][2:]]
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        commands.append(Command("\n".join(text), tuple(output)))
    return commands


def parse(text: str, path: Path | str = "<page>") -> Runbook:
    """The page's fenced blocks with their markers; commands and shown output per block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    unmarked: list[int] = []
    pending: Block | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("<!--") and "runbook:" in line:
            end = i
            while "-->" not in lines[end]:
                end += 1
                if end == len(lines):
                    raise RunbookError(f"{path}: marker at line {i + 1} is never closed")
            found = _MARKER.search("\n".join(lines[i : end + 1]))
            if found is None:
                raise RunbookError(f"{path}: marker at line {i + 1} is not `<!-- runbook: ...`")
            if pending is not None:
                raise RunbookError(f"{path}: marker at line {pending.line} has no block")
            pending = _marker(found.group(1), i + 1)
            i = end + 1
            continue
        fence = _FENCE.match(line)
        if fence:
            close = fence.group(1)
            end = i + 1
            while end < len(lines) and not lines[end].startswith(close):
                end += 1
            body = lines[i + 1 : end]
            commands = _commands(body) if fence.group(2) in ("console", "bash", "") else []
            if pending is not None:
                pending.line = i + 1
                pending.commands = commands
                if pending.kind == "step" and not commands:
                    raise RunbookError(f"{path}: {pending.where()} has no `$ ` command")
                blocks.append(pending)
                pending = None
            elif commands:
                unmarked.append(i + 1)
            i = end + 1
            continue
        if pending is not None and line.strip():
            raise RunbookError(f"{path}: marker at line {pending.line} is not right above a block")
        i += 1
    if pending is not None:
        raise RunbookError(f"{path}: marker at line {pending.line} has no block")
    return Runbook(Path(path), blocks, unmarked)


def load(path: Path) -> Runbook:
    return parse(path.read_text(), path)


def in_order(expects: list[Expect], lines: list[str]) -> Expect | None:
    """The first expected line not found, in order, in `lines` (None: all found)."""
    at = 0
    for expect in expects:
        while at < len(lines) and not expect.matches(lines[at]):
            at += 1
        if at == len(lines):
            return expect
        at += 1
    return None


def check_page(runbook: Runbook) -> None:
    """What can be checked without running anything: every `$ ` block is classified, and
    every step's expectations and captures hold for the output the page itself shows."""
    problems = [f"block at line {n} has commands but no runbook marker" for n in runbook.unmarked]
    for block in runbook.steps:
        shown = block.shown_output
        missing = in_order(block.expects, shown)
        if missing is not None:
            problems.append(f"{block.where()}: the page does not show {missing.text!r}")
        for capture in block.captures:
            value = capture.find(shown)
            if capture.replaces is not None and value != capture.replaces:
                problems.append(
                    f"{block.where()}: capture {capture.name} finds {value!r} in the page, "
                    f"not {capture.replaces!r}"
                )
        for wait in block.awaits:
            if not any(wait.command_contains in c.text for c in block.commands):
                problems.append(f"{block.where()}: no command contains {wait.command_contains!r}")
    if problems:
        raise RunbookError(f"{runbook.path}:\n  " + "\n  ".join(problems))


@dataclass
class Ran:
    command: str
    output: list[str]
    status: int


class Shell:
    """One bash, fed commands one at a time like a reader's terminal; stdout and stderr
    together, each command bounded by a timeout."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background: set[int] = set()
        self._buffer = b""

    def run(self, command: str, timeout: float) -> Ran:
        marker = f"__runbook_{uuid.uuid4().hex}__"
        # `jobs -p` after every command: the PIDs of what it left in the background.
        # Stdin from /dev/null: the shell's own stdin is this harness, never a command's input.
        script = (
            # `$?` is the previous command's status, as `echo "exit code $?"` expects.
            f"(exit ${{__rb_status:-0}})\n{{\n{command}\n}} < /dev/null\n"
            f"__rb_status=$?; echo; echo {marker} $__rb_status $(jobs -p)\n"
        ).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.flush()
        text = self._read_until(marker.encode(), timeout, command)
        before, _, after = text.partition(marker)
        status, *pids = after.split()
        self.background.update(int(p) for p in pids)
        output = before.splitlines()
        if output and output[-1] == "":
            output.pop()  # the `echo` that puts the marker on a line of its own
        return Ran(command, output, int(status))

    def _read_until(self, marker: bytes, timeout: float, command: str) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            at = self._buffer.find(marker)
            if at >= 0:
                end = self._buffer.find(b"\n", at)
                if end >= 0:
                    text, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                    return text.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunbookError(
                    f"timed out after {timeout:.0f}s: {command}\n"
                    f"output so far:\n{self._buffer.decode(errors='replace')}"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RunbookError(f"the shell exited during: {command}")
                self._buffer += chunk

    def close(self, grace: float = 3.0) -> None:
        """Stop what the commands left in the background, then the shell, by PID.

        A role stops cleanly within a second or two of its SIGTERM. One still running when the
        page's clean-up stopped the services (stage 2's first scheduler and agent, whose kills
        are Break it steps not run here; stage 4's roles, stopped by `dev down` mid-shutdown)
        cannot finish its clean stop, its ZooKeeper calls retried for a session: it waited out
        all of a 10 s grace for nothing, on every such page.
        """
        alive = [pid for pid in self.background if _signal(pid, signal.SIGTERM)]
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.1)
        for pid in alive:
            _signal(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _running(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (the shell's): fall through to a signal 0 probe
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie (state Z) waits for its parent to reap it: it is no longer running.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        # Gone before or while its stat was read (reaped between open and read).
        return False


@dataclass
class StepResult:
    block: Block
    ran: list[Ran]
    seconds: float

    @property
    def output(self) -> list[str]:
        return [line for r in self.ran for line in r.output]


class RunbookRun:
    """Runs the steps of one runbook in one shell, and checks each as it goes."""

    def __init__(
        self,
        runbook: Runbook,
        cwd: Path,
        env: Mapping[str, str],
        *,
        rewrites: Mapping[str, str] | None = None,
        include_slow: bool = False,
    ) -> None:
        self.runbook = runbook
        self.include_slow = include_slow
        self.substitutions: dict[str, str] = dict(rewrites or {})
        self.shell = Shell(cwd, env)
        self.results: list[StepResult] = []

    def __enter__(self) -> RunbookRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shell.close()

    def steps(self) -> list[Block]:
        return [b for b in self.runbook.steps if self.include_slow or not b.slow]

    def run_all(self) -> list[StepResult]:
        for block in self.steps():
            self.run_step(block)
        return self.results

    def _text(self, command: Command) -> str:
        if not self.substitutions:
            return command.text
        # One pass, longest literal first: a value put in (a real PID) is never itself taken
        # for a later literal (the page's PID), which would signal some other process.
        literals = sorted(self.substitutions, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(literal) for literal in literals))
        return pattern.sub(lambda found: self.substitutions[found.group(0)], command.text)

    def run_step(self, block: Block) -> StepResult:
        started = time.monotonic()
        ran: list[Ran] = []
        captured: dict[str, str] = {}
        awaiting: dict[int, list[Await]] = {}
        for wait in block.awaits:
            first = next(c for c in block.commands if wait.command_contains in c.text)
            awaiting.setdefault(id(first), []).append(wait)
        for command in block.commands:
            text = self._text(command)
            result = self.shell.run(text, block.timeout)
            deadline = time.monotonic() + block.timeout
            waits = awaiting.get(id(command), [])
            # A bounded retry of a read-only command, until the fact it shows becomes true.
            while not all(_any_line(w.pattern, result.output) for w in waits):
                if time.monotonic() >= deadline:
                    raise RunbookError(
                        f"{self.runbook.path} {block.where()}: `{text}` never showed "
                        f"{[w.pattern for w in waits]} in {block.timeout:.0f}s; "
                        "last output:\n" + "\n".join(result.output)
                    )
                time.sleep(0.5)
                result = self.shell.run(text, block.timeout)
            ran.append(result)
            # A value printed by this command may be used by the next one in the same block.
            for capture in block.captures:
                if capture.name not in captured:
                    value = capture.find(result.output)
                    if value is not None:
                        captured[capture.name] = value
                        self._bind(capture, value)
        step = StepResult(block, ran, time.monotonic() - started)
        missing = in_order(block.expects, step.output)
        if missing is not None:
            transcript = "\n".join(f"$ {r.command}\n" + "\n".join(r.output) for r in ran)
            raise RunbookError(
                f"{self.runbook.path} {block.where()}: expected {missing.text!r}; "
                f"the commands printed:\n{transcript}"
            )
        for capture in block.captures:
            if capture.name not in captured:
                raise RunbookError(
                    f"{self.runbook.path} {block.where()}: capture {capture.name}: no line "
                    f"matches {capture.pattern!r}:\n" + "\n".join(step.output)
                )
        self.results.append(step)
        return step

    def _bind(self, capture: Capture, value: str) -> None:
        # Keeps `$?` as the command that printed the value left it.
        self.shell.run(f"{capture.name}={shlex.quote(value)}; (exit $__rb_status)", 5)
        if capture.replaces is not None:
            self.substitutions[capture.replaces] = value


def _any_line(pattern: str, lines: list[str]) -> bool:
    return any(re.search(pattern, line) for line in lines)


def covering_tests_exist(runbook: Runbook, root: Path) -> list[str]:
    """Problems with `covered-by=` references: a file that is missing, or a test not in it."""
    problems = []
    for block in runbook.blocks:
        for ref in filter(None, re.split(r"[\s,]+", block.covered_by)):
            file, _, test = ref.partition("::")
            source = root / file
            if not (source.is_file() or (source.is_dir() and not test)):
                problems.append(f"{block.where()}: {file} does not exist")
            elif test and not re.search(rf"def {re.escape(test)}\b", source.read_text()):
                problems.append(f"{block.where()}: {file} has no test {test}")
    return problems


def _normalised(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def uncovered_quotes(page: Runbook, runbooks: Iterable[Runbook]) -> list[str]:
    """A page that quotes a runbook (a tutorial): its unmarked command blocks, each command of
    which is not in one of `runbooks` (so nothing runs or covers it). Marked blocks are the
    page's own steps or skips, checked like a runbook's."""
    known = {_normalised(c.text) for book in runbooks for b in book.blocks for c in b.commands}
    quoted = parse(page.path.read_text(), page.path)
    problems = []
    for line in quoted.unmarked:
        block = parse_block_at(page.path.read_text(), line)
        missing = [c.text for c in block if _normalised(c.text) not in known]
        if missing:
            problems.append(f"{page.path}: block at line {line} quotes no runbook: {missing[0]!r}")
    return problems


def parse_block_at(text: str, line: int) -> list[Command]:
    """The commands of the fenced block that opens at `line` (1-based)."""
    lines = text.splitlines()
    close = _FENCE.match(lines[line - 1]).group(1)
    end = line
    while end < len(lines) and not lines[end].startswith(close):
        end += 1
    return _commands(lines[line:end])
