"""`common` never imports a stage; stages import `common`, never each other.

The layers inside `common` are import-linter contracts in pyproject.toml (`make lint`); the last
test here runs them too, so `pytest tests/unit` alone also fails on a layering violation.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every stage folder there is, found rather than listed: a new stage is checked from its first
# commit, with nothing to register here.
STAGES = sorted(
    p.name for p in ROOT.iterdir() if p.is_dir() and re.fullmatch(r"stage\d+_\w+", p.name)
)


def imported_packages(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_stage_folders_are_found():
    assert {"stage1_mvp", "stage2_coordination", "stage3_kafka"} <= set(STAGES)


def test_common_never_imports_a_stage():
    imports = imported_packages("common")
    offenders = {s: sorted(imports[s]) for s in STAGES if s in imports}
    assert not offenders, offenders


def test_stages_never_import_each_other():
    for stage in STAGES:
        imports = imported_packages(stage)
        offenders = {s: sorted(imports[s]) for s in STAGES if s != stage and s in imports}
        assert not offenders, (stage, offenders)


def test_the_import_contracts_inside_common_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
