"""`common` never imports a stage; stages import `common`, never each other."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["stage1_mvp", "stage2_coordination", "stage3_kafka", "stage4_rpc", "stage5_observability"]


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


def test_common_never_imports_a_stage():
    imports = imported_packages("common")
    offenders = {s: sorted(imports[s]) for s in STAGES if s in imports}
    assert not offenders, offenders


def test_stages_never_import_each_other():
    for stage in STAGES:
        if not (ROOT / stage).exists():
            continue
        imports = imported_packages(stage)
        offenders = {s: sorted(imports[s]) for s in STAGES if s != stage and s in imports}
        assert not offenders, (stage, offenders)
