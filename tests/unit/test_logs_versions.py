"""One VictoriaLogs version in three places: the binary `make setup` builds from its Go module,
the official image compose runs, and the constant the native stack names in its errors."""

import re
from pathlib import Path

import yaml

from common.devstack.victorialogs import VICTORIALOGS_VERSION

ROOT = Path(__file__).resolve().parents[2]


def makefile_version() -> str:
    match = re.search(r"^VICTORIALOGS_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile names no VICTORIALOGS_VERSION"
    return match[1]


def test_the_compose_image_is_the_version_the_makefile_builds():
    compose = yaml.safe_load((ROOT / "stage5_observability" / "compose.yaml").read_text())
    image = compose["services"]["victorialogs"]["image"]
    assert image == f"victoriametrics/victoria-logs:{makefile_version()}"


def test_the_native_stack_expects_the_version_the_makefile_builds():
    assert VICTORIALOGS_VERSION == makefile_version()


def test_setup_builds_victorialogs_from_its_go_module_at_that_version():
    makefile = (ROOT / "Makefile").read_text()
    setup = re.search(r"^setup: (.*)##", makefile, re.M)[1]
    assert "$(VICTORIALOGS_STAMP)" in setup.split()
    assert (
        "install github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@$(VICTORIALOGS_VERSION)"
        in makefile
    )


def test_every_tasklab_service_in_compose_ships_its_logs_to_the_store():
    compose = yaml.safe_load((ROOT / "stage5_observability" / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if "build" in svc:
            assert svc["environment"]["TASKLAB_LOGS_URL"] == "http://victorialogs:9428", name
