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


# ---- stage 5: the monitoring services of the compose file ----------------------------------
STAGE5 = ROOT / "stage5_observability"


def stage5_compose() -> dict:
    return yaml.safe_load((STAGE5 / "compose.yaml").read_text())


def stage5_scrape_targets() -> dict[str, tuple[str, str]]:
    """instance -> (role, host:port) of the compose Prometheus's tasklab job."""
    config = yaml.safe_load((STAGE5 / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tasklab")
    found = {}
    for group in job["static_configs"]:
        (target,) = group["targets"]
        found[group["labels"]["instance"]] = (group["labels"]["role"], target)
    return found


def native_version(argv: list[str]) -> str:
    assert shutil.which(argv[0]), f"{argv[0]} missing: `make system-deps` installs it"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return re.search(r"version (\d+\.\d+\.\d+)", done.stdout + done.stderr)[1]


@pytest.mark.parametrize(
    ("service", "image", "argv"),
    [
        ("prometheus", "prom/prometheus", ["prometheus", "--version"]),
        ("alertmanager", "prom/alertmanager", ["prometheus-alertmanager", "--version"]),
    ],
)
def test_compose_prometheus_and_alertmanager_are_the_native_stacks_versions(service, image, argv):
    assert stage5_compose()["services"][service]["image"] == f"{image}:v{native_version(argv)}"


def test_compose_grafana_is_the_release_whose_schema_checks_the_dashboards():
    import json

    schema = json.loads((ROOT / "tools/grafana-schema/package.json").read_text())
    version = schema["dependencies"]["@grafana/schema"]
    assert stage5_compose()["services"]["grafana"]["image"] == f"grafana/grafana:{version}"


def test_every_role_in_the_stage5_compose_serves_its_operator_port():
    roles = {
        name: svc
        for name, svc in stage5_compose()["services"].items()
        if (svc.get("command") or [])[:1] == ["run"]
    }
    from common.stages import load_stage

    # One service per process of the stage's topology.
    assert len(roles) == len(load_stage(5).processes()), sorted(roles)
    for name, svc in roles.items():
        assert svc["environment"]["TASKLAB_METRICS_ADDRESS"] == "0.0.0.0:9100", name


def test_the_compose_scrape_config_lists_every_process_of_the_stage5_topology():
    from common.stages import load_stage

    targets = stage5_scrape_targets()
    services = stage5_compose()["services"]
    # One target per process of the topology, labelled with its role and name...
    assert {name: role for name, (role, _) in targets.items()} == dict(
        (name, role) for role, name in load_stage(5).processes()
    )
    for name, (role, target) in targets.items():
        host, port = target.split(":")
        # ...at a compose service of that name, running that role, serving on that port
        svc = services[host]
        assert host == name and svc["hostname"] == name, name
        assert svc["command"][:2] == ["run", role], (name, svc["command"])
        assert svc["environment"]["TASKLAB_METRICS_ADDRESS"].endswith(f":{port}"), name
    # ...and an agent's or scheduler's id is its instance label, which the alerts name
    for name in targets:
        env = services[name]["environment"]
        ids = {k: v for k, v in env.items() if k.startswith("TASKLAB_") and k.endswith("_ID")}
        assert all(v == name for v in ids.values()), (name, ids)


def test_the_compose_monitoring_mounts_exist_and_the_compose_prometheus_config_passes_promtool(
    tmp_path,
):
    services = stage5_compose()["services"]
    for name in ("prometheus", "alertmanager", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (STAGE5 / source).resolve().exists(), (name, volume)
    # The config as the container sees it, its rules path pointed at the repository's.
    text = (STAGE5 / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    rules = ROOT / "deploy/prometheus/rules"
    assert any(
        f"{rules.relative_to(ROOT)}:/etc/prometheus/rules" in v.replace("../", "")
        for v in services["prometheus"]["volumes"]
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules", str(rules)))
    assert shutil.which("promtool"), "promtool missing: `make system-deps` installs it"
    done = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rules found" in done.stdout
