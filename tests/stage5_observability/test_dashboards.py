"""The Grafana dashboards, checked without a Grafana server (none can run on these machines).

Grafana's dashboard schema is CUE inside Grafana; the npm package @grafana/schema ships the
TypeScript types generated from it, `Dashboard` among them. Each dashboard's JSON is written
out as a TypeScript object literal of that type and checked by the TypeScript compiler, which
rejects a missing required field, a value of the wrong type, and a field the schema does not
have (a literal's excess properties). Both packages are pinned in tools/grafana-schema
(`make setup` installs them). test_alerting.py and test_front_door_dashboard.py run every
panel's query on a live Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.devstack.monitoring import DEPLOY_DIR, REPO_ROOT

DASHBOARDS = sorted((DEPLOY_DIR / "grafana" / "dashboards").glob("*.json"))
CHECKER = REPO_ROOT / "tools" / "grafana-schema"
TSC = CHECKER / "node_modules" / ".bin" / "tsc"
SCHEMA_TYPES = CHECKER / "node_modules" / "@grafana" / "schema" / "dist" / "types" / "index.d.ts"
PROVISIONING = DEPLOY_DIR / "grafana" / "provisioning"


def type_check(dashboards: dict[str, dict], workdir: Path) -> subprocess.CompletedProcess:
    """tsc's verdict on each dashboard as a `Dashboard` of @grafana/schema."""
    assert TSC.exists() and SCHEMA_TYPES.exists(), (
        "the schema checker is not installed: run `make setup` (npm ci in tools/grafana-schema)"
    )
    files = []
    for name, dashboard in dashboards.items():
        source = workdir / f"{name}.ts"
        source.write_text(
            'import type { Dashboard } from "@grafana/schema";\n\n'
            f"export const dashboard: Dashboard = {json.dumps(dashboard, indent=2)};\n"
        )
        files.append(str(source))
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "skipLibCheck": True,
            "target": "es2022",
            "module": "esnext",
            "moduleResolution": "bundler",
            "types": [],
            "paths": {"@grafana/schema": [str(SCHEMA_TYPES)]},
        },
        "files": files,
    }
    (workdir / "tsconfig.json").write_text(json.dumps(config))
    return subprocess.run(
        [str(TSC), "-p", str(workdir / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_there_are_the_four_dashboards():
    assert [p.name for p in DASHBOARDS] == [
        "agent.json",
        "front-door.json",
        "guarantees.json",
        "overview.json",
    ]


def test_the_dashboards_are_what_tools_dashboards_writes():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_is_a_dashboard_by_grafanas_own_schema(tmp_path):
    done = type_check({p.stem: json.loads(p.read_text()) for p in DASHBOARDS}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "break_it, complaint",
    [
        (lambda d: d.update(refresh=10), "Type 'number' is not assignable to type 'string'"),
        (lambda d: d.update(panelz=d.pop("panels")), "panelz"),
        (lambda d: d["panels"][1]["gridPos"].pop("w"), "'w'"),
        (lambda d: d["panels"][1].update(targets="up"), "Type 'string' is not assignable"),
    ],
    ids=["a wrong type", "an unknown field", "a missing required field", "targets not a list"],
)
def test_the_schema_check_rejects_a_broken_dashboard(tmp_path, break_it, complaint):
    dashboard = json.loads((DEPLOY_DIR / "grafana" / "dashboards" / "overview.json").read_text())
    break_it(dashboard)
    done = type_check({"broken": dashboard}, tmp_path)
    assert done.returncode != 0 and complaint in done.stdout, done.stdout + done.stderr


def test_every_panel_has_a_query_on_the_provisioned_prometheus():
    datasource = (PROVISIONING / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in datasource
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, path.name
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: two panels share an id"
