"""The exercises (exercises/stageN/, run by `make exercise-stageN`) cannot rot silently.

Against the code as it is, every exercise test must fail, and fail on the message that tells
the learner what to do ("Exercise 2.1 is not done yet: ..."), not on an import or collection
error. With the reference solutions plugged in (exercises/solutions/), every one must pass.
Each run is a separate pytest process, so the solutions never leak into this one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = sorted(p.name for p in (ROOT / "exercises").glob("stage*") if p.is_dir())


def run_exercises(report: Path, solved: bool) -> list[ET.Element]:
    """Every stage's exercises in one pytest process: its test cases, from its JUnit report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLAB_")}
    if solved:
        env["TASKLAB_EXERCISE_SOLUTIONS"] = "1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "exercises",
            f"--junitxml={report}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return list(ET.parse(report).getroot().iter("testcase"))


@pytest.fixture(scope="module")
def as_is(tmp_path_factory) -> list[ET.Element]:
    return run_exercises(tmp_path_factory.mktemp("exercises") / "as-is.xml", solved=False)


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> list[ET.Element]:
    return run_exercises(tmp_path_factory.mktemp("exercises") / "solved.xml", solved=True)


def of(stage: str, cases: list[ET.Element]) -> list[ET.Element]:
    return [c for c in cases if c.get("classname", "").startswith(f"exercises.{stage}.")]


def test_every_stage_so_far_has_exercises():
    assert STAGES == ["stage1", "stage2", "stage3", "stage4"]


@pytest.mark.integration
@pytest.mark.parametrize("stage", STAGES)
def test_each_exercise_fails_as_the_code_is_saying_what_to_do(stage, as_is):
    cases = of(stage, as_is)
    assert cases, f"no exercise test collected in exercises/{stage}"
    exercises = set()
    for case in cases:
        name = case.get("name")
        error = case.find("error")
        assert error is None, f"{name} errors instead of failing: {error.get('message')}"
        failure = case.find("failure")
        assert failure is not None, f"{name} passes without the learner's change"
        message = failure.get("message", "")
        # Either the exercise's own "not done yet" (what is missing), or an assertion of the
        # test about behaviour (what is wrong): never a TypeError, an import error, a crash.
        assert re.match(r"Failed: Exercise \d+\.\d+ is not done yet: |AssertionError", message), (
            f"{name} fails for another reason: {message}"
        )
        exercises.add(case.get("classname"))
    assert len(exercises) >= 2, f"{stage} has fewer than two exercise files: {sorted(exercises)}"


@pytest.mark.integration
@pytest.mark.parametrize("stage", STAGES)
def test_each_exercise_passes_with_its_reference_solution(stage, solved):
    cases = of(stage, solved)
    assert cases
    failed = {
        c.get("name"): (c.find("failure") if c.find("failure") is not None else c.find("error"))
        for c in cases
        if c.find("failure") is not None
        or c.find("error") is not None
        or c.find("skipped") is not None
    }
    assert not failed, {
        n: e.get("message") if e is not None else "skipped" for n, e in failed.items()
    }
