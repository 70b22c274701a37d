"""Helpers the stage 5 tests share: a role's operator port, scraped and checked as Prometheus
and promtool see it (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.testing import eventually
from common.testing.processes import RoleProcess


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer: its text and its samples, as Prometheus would read them."""

    text: str

    def families(self) -> dict[str, str]:
        """Exposition family name -> type (a counter's name with its `_total`)."""
        out = {}
        for family in text_string_to_metric_families(self.text):
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = family.type
        return out

    def samples(self, name: str, **labels: str) -> list[float]:
        """Values of the samples called `name` whose labels include `labels`."""
        return [
            sample.value
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0 when there are none)."""
        return sum(self.samples(name, **labels))

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            sample.labels[label]
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name and label in sample.labels
        }


def scrape(address: str, path: str = "/metrics") -> Scrape:
    response = httpx.get(f"http://{address}{path}", timeout=5.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return Scrape(response.text)


def ready(address: str) -> httpx.Response:
    return httpx.get(f"http://{address}/ready", timeout=10.0)


def wait_ready(proc: RoleProcess, address: str, timeout: float = 30.0) -> dict:
    """Until the role's /ready answers 200 (failing at once if the process exited)."""

    def answers() -> dict | None:
        assert proc.alive(), f"{proc.name} exited:\n{proc.log_text()[-2000:]}"
        try:
            response = ready(address)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    return eventually(answers, timeout, 0.1, message=f"{proc.name} ready on {address}")


def promtool_problems(text: str) -> str:
    """What `promtool check metrics` says about an exposition ("" = clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make system-deps` installs the Debian package prometheus"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    return (done.stdout + done.stderr).strip() if done.returncode or done.stdout.strip() else ""
