"""The compose file's PostgreSQL is the native stack's major version, and compose wires it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from common.devstack.postgresql import MAJOR, find_bindir

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "stage5_observability" / "compose.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_postgres_image_has_the_native_major_version():
    image = compose()["services"]["postgres"]["image"]
    match = re.fullmatch(r"postgres:(\d+)(?:[.-].*)?", image)
    assert match, f"{image} is not the official postgres image with a version tag"
    assert int(match.group(1)) == MAJOR


def test_the_native_server_is_the_major_version_the_devstack_declares():
    bindir = find_bindir(MAJOR)
    assert bindir is not None, "PostgreSQL is not installed: run `make setup`"
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(rf"\(PostgreSQL\) {MAJOR}\.", version), version


def test_compose_runs_the_archiver_against_a_healthchecked_postgres():
    services = compose()["services"]
    assert "healthcheck" in services["postgres"]
    archiver = services["archiver-1"]
    assert archiver["command"][:2] == ["run", "archiver"]
    assert archiver["depends_on"]["postgres"]["condition"] == "service_healthy"
    dsn = archiver["environment"]["TASKLAB_ARCHIVE_DSN"]
    assert dsn.startswith("postgresql://") and "@postgres:5432/" in dsn
    # The readers (the API, the providers) get the same DSN.
    assert services["api-1"]["environment"]["TASKLAB_ARCHIVE_DSN"] == dsn
