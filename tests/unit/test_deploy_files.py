"""Compose files and the Dockerfile, checked offline (no Docker engine is needed).

Each compose file must validate against the Compose specification schema, build the tasklab
roles from the one root Dockerfile, run only roles its stage has, and use the same Redis
version as the native stack.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = sorted(ROOT.glob("stage*/compose.yaml"))
STAGE_DIRS = {
    1: "stage1_mvp",
    2: "stage2_coordination",
    3: "stage3_kafka",
    4: "stage4_rpc",
    5: "stage5_observability",
}


def test_every_stage_folder_has_a_compose_file():
    assert COMPOSE_FILES, "no stage*/compose.yaml found"
    for folder in ROOT.glob("stage*_*"):
        if (folder / "bootstrap.py").exists():
            assert (folder / "compose.yaml").exists(), folder


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_compose_file_validates_against_the_compose_spec_schema(path):
    exe = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_compose_services_build_from_the_root_dockerfile_and_run_real_roles(path):
    compose = yaml.safe_load(path.read_text())
    stage = next(n for n, d in STAGE_DIRS.items() if d == path.parent.name)
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            assert (path.parent / build["context"] / build["dockerfile"]).resolve() == (
                ROOT / "Dockerfile"
            ), name
        cmd = svc.get("command") or []
        if cmd[:1] == ["run"]:
            assert cmd[2:] == ["--stage", str(stage)], (name, cmd)
        if "healthcheck" not in svc and "profiles" not in svc:
            pytest.fail(f"{path.parent.name}/{name} has no healthcheck")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_compose_redis_is_the_native_redis_version_with_aof(path):
    assert shutil.which("redis-server"), "redis-server missing: run `make setup`"
    native = re.search(
        r"v=(\d+\.\d+\.\d+)",
        subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=True
        ).stdout,
    )[1]
    redis = yaml.safe_load(path.read_text())["services"]["redis"]
    assert redis["image"] == f"redis:{native}"
    assert redis["command"][1:] == ["--appendonly", "yes", "--appendfsync", "everysec"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_an_agents_stop_grace_period_outlasts_its_own_grace_for_running_tasks(path):
    # Compose sends SIGKILL after stop_grace_period: it must leave the agent its whole
    # agent_stop_grace, plus time to kill what still runs and hand it back.
    import tomllib

    grace = tomllib.loads((ROOT / "config" / "base.toml").read_text())["agent_stop_grace"]
    agents = {
        name: svc
        for name, svc in yaml.safe_load(path.read_text())["services"].items()
        if (svc.get("command") or [])[:2] == ["run", "agent"]
    }
    assert agents, f"{path.parent.name} runs no agent"
    for name, svc in agents.items():
        period = svc.get("stop_grace_period", "10s")
        seconds = float(re.fullmatch(r"(\d+)s", period)[1])
        assert seconds >= grace + 5, (name, period, grace)
