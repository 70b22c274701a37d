"""Every stage's runbook, run as its reader would run it: the marked blocks, in order, in one
shell, against the services the runbook itself starts (`tasklab dev up --stage N`).

The marks are HTML comments in the README (see common/testing/runbook.py). A command that no
longer works, or output that no longer looks like what the page shows, fails here. Blocks that
take long (Break it) are either `slow` steps, run only in the slow set, or `skip`ped as
covered by the dedicated test they name; that the named test exists is checked too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from common.devstack.base import ServiceUnavailable, free_port
from common.devstack.stack import make_service
from common.stages import load_stage
from common.testing import runbook
from common.testing.pytest_plugin import unavailable

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    "stage1": ROOT / "stage1_mvp/README.md",
    "stage2": ROOT / "stage2_coordination/README.md",
    "stage3": ROOT / "stage3_kafka/README.md",
    "stage4": ROOT / "stage4_rpc/README.md",
    "stage5": ROOT / "stage5_observability/README.md",
}
# Fixed loopback addresses a page starts a process on (two providers, a second API): each run
# gets free ports in their place, so two runs, or a run and a learner's own stack, never fight
# over one. The page's output shows these numbers; its marks expect any port.
FIXED_ADDRESSES = {
    "stage4": ("127.0.0.1:50151", "127.0.0.1:50152", "127.0.0.1:47340", "127.0.0.1:47341"),
}
# What the test run sets in a page's environment that a reader does not. Stage 5's Break it
# waits for AgentDown (`for: 1m`) and QueueBacklog (`for: 2m`) to fire: the dev stack's
# Prometheus gets shorter waits for those two (common/devstack/monitoring.py), and the page's
# commands and output are the same. AgentDown's stays above the agent's ZooKeeper session (10 s),
# so the killed agent is failed over, and its id free, before the page starts it again; every
# other rule keeps its deployed wait, NoSchedulerLeader's minute (which the frozen leader's
# failover must not outrun) among them.
PAGE_ENV = {
    "stage5": {"TASKLAB_DEVSTACK_ALERT_WAITS": "AgentDown=15s,QueueBacklog=10s"},
}
# Tutorial pages quote the runbook's commands; they are checked against it in
# tests/unit/test_runbook_pages.py rather than run a second time.


def sandbox(tmp_path: Path, name: str = "") -> tuple[Path, dict[str, str]]:
    """A working directory that looks like the repository to the runbook's commands (`.venv`,
    the stage folders, `.tasklab/`), and an environment with no TASKLAB_* setting leaking in
    from the test run, but the page's own PAGE_ENV."""
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    if os.geteuid() == 0:
        # Run as root, the dev stack runs PostgreSQL as the `postgres` user, who must be able
        # to reach its data dir inside the sandbox (common/devstack/postgresql.py). pytest makes
        # its temporary dirs 0700; searchable (o+x, not readable) is all it takes.
        for parent in [work / "tmp", *(work / "tmp").parents]:
            if parent == Path("/") or parent == Path(tempfile.gettempdir()):
                break
            parent.chmod(parent.stat().st_mode | 0o001)
    (work / ".venv").symlink_to(ROOT / ".venv")
    # The stage folders, for the files a page hands to a command (a composite's document).
    for stage in ROOT.glob("stage[0-9]_*"):
        (work / stage.name).symlink_to(stage)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLAB_")}
    env["TASKLAB_DEVSTACK_DIR"] = str(work / ".tasklab/devstack")
    env["TERM"] = "dumb"
    env.update(PAGE_ENV.get(name, {}))
    return work, env


def write_transcript(name: str, results: list[runbook.StepResult]) -> None:
    """With RUNBOOK_TRANSCRIPTS=DIR, what each step printed: the real output to paste into a
    page that changed on purpose, or to read when a step failed."""
    transcripts = os.environ.get("RUNBOOK_TRANSCRIPTS")
    if transcripts:
        Path(transcripts, f"{name}.txt").write_text(
            "\n".join(
                f"## {r.block.name} ({r.seconds:.1f}s)\n"
                + "\n".join(f"$ {c.command}\n" + "\n".join(c.output) for c in r.ran)
                for r in results
            )
        )


def services_can_run(name: str) -> None:
    """The runbook starts its stage's services itself: where one cannot run here, skip
    locally and fail in CI, as every service fixture does."""
    for service in load_stage(int(name.removeprefix("stage"))).services:
        try:
            make_service(service).check_available()
        except ServiceUnavailable as exc:
            unavailable(f"{service}: {exc}")


def run_page(name: str, tmp_path: Path, include_slow: bool) -> list[runbook.StepResult]:
    services_can_run(name)
    book = runbook.load(PAGES[name])
    work, env = sandbox(tmp_path, name)
    rewrites = {"/tmp/": f"{work}/tmp/"}
    rewrites.update({a: f"127.0.0.1:{free_port()}" for a in FIXED_ADDRESSES.get(name, ())})
    started = time.monotonic()
    try:
        # /tmp/ in a command (a log file, a data directory) is this test's own, so runs
        # side by side never share a file.
        with runbook.RunbookRun(
            book, work, env, rewrites=rewrites, include_slow=include_slow
        ) as run:
            try:
                results = run.run_all()
            finally:
                write_transcript(name, run.results)
    finally:
        # Whatever the runbook started with `tasklab dev up` and did not stop: by the PIDs
        # the dev stack recorded, in the sandbox's dev stack directory and in any other the
        # page chose itself (`export TASKLAB_DEVSTACK_DIR=/tmp/...`, rewritten into the
        # sandbox), so a run that failed midway leaves no service behind. Nothing to stop is
        # not an error.
        stacks = {Path(env["TASKLAB_DEVSTACK_DIR"])}
        stacks.update(p for p in work.rglob("*devstack*") if p.is_dir())
        for stack in sorted(stacks):
            subprocess.run(
                [str(ROOT / ".venv/bin/tasklab"), "dev", "down"],
                cwd=work,
                env={**env, "TASKLAB_DEVSTACK_DIR": str(stack)},
                capture_output=True,
                timeout=60,
                check=False,
            )
    print(f"{name}: {len(results)} block(s) in {time.monotonic() - started:.1f}s")
    return results


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_command_block_of_the_runbook_is_marked_and_its_page_shows_what_it_expects(name):
    book = runbook.load(PAGES[name])
    runbook.check_page(book)
    assert runbook.covering_tests_exist(book, ROOT) == []
    assert book.steps, "a runbook with nothing to run"


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_runbook_runs_as_written_against_the_services_it_starts(name, tmp_path):
    results = run_page(name, tmp_path, include_slow=False)
    assert [r.block.name for r in results] == [
        b.name for b in runbook.load(PAGES[name]).steps if not b.slow
    ]


def has_slow_steps(name: str) -> bool:
    try:
        return any(b.slow for b in runbook.load(PAGES[name]).steps)
    except runbook.RunbookError:
        return True  # let the run say what is wrong with the page


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", [n for n in sorted(PAGES) if has_slow_steps(n)])
def test_the_runbook_runs_as_written_with_its_slow_break_it_steps(name, tmp_path):
    book = runbook.load(PAGES[name])
    results = run_page(name, tmp_path, include_slow=True)
    assert len(results) == len(book.steps)


TUTORIALS = {
    "stage1": ROOT / "docs/tutorial/stage1.md",
    "stage2": ROOT / "docs/tutorial/stage2.md",
    "stage3": ROOT / "docs/tutorial/stage3.md",
    "stage4": ROOT / "docs/tutorial/stage4.md",
    "stage5": ROOT / "docs/tutorial/stage5.md",
}


@pytest.mark.parametrize("name", sorted(TUTORIALS))
def test_every_command_a_tutorial_quotes_is_run_by_its_runbook_or_marked(name):
    """A tutorial quotes its stage's runbook: a command block there is covered when each of its
    commands is one of the runbook's (run, or skipped as covered by a named test); any other
    block carries its own runbook mark, saying why it is not run."""
    tutorial = runbook.load(TUTORIALS[name])
    runbook.check_page(
        runbook.Runbook(tutorial.path, tutorial.blocks, [])
    )  # its own marks are well-formed and their tests exist
    assert runbook.covering_tests_exist(tutorial, ROOT) == []
    assert runbook.uncovered_quotes(tutorial, [runbook.load(p) for p in PAGES.values()]) == []
