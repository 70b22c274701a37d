"""The entry pages do not drift: README.md and docs/index.md say the same about every stage, as
tools/stages.toml does, and the README's patterns map covers every pattern page."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tools import sync_pages

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _status_by_stage(table: str) -> dict[int, str]:
    """Stage number -> the status word of its row in a rendered stage table."""
    found = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells and cells[0].isdigit():
            # "**Done**: runbook, …", "**In progress**: …" or "Planned".
            found[int(cells[0])] = re.match(r"\**([A-Za-z][a-z ]*[a-z])", cells[-1])[1]
    return found


def _block(pattern: re.Pattern[str], page: str) -> re.Match[str]:
    match = pattern.search((ROOT / page).read_text())
    assert match is not None, f"{page} has no generated block for {pattern.pattern[:40]}…"
    return match


def test_the_stage_tables_and_status_lines_are_rendered_from_tools_stages_toml():
    stages = sync_pages.load_stages()
    readme = _block(sync_pages.STAGES_BLOCK, "README.md")["body"]
    docs = _block(sync_pages.STAGES_BLOCK, "docs/index.md")["body"]
    assert readme == "\n" + sync_pages.readme_table(stages) + "\n", (
        "README.md's stage table differs from tools/stages.toml: run tools/sync_pages.py"
    )
    assert docs == "\n" + sync_pages.docs_table(stages) + "\n", (
        "docs/index.md's stage table differs from tools/stages.toml: run tools/sync_pages.py"
    )
    for stage in stages:
        if (ROOT / stage.readme).exists():
            line = _block(sync_pages.STATUS_BLOCK, stage.readme)["body"]
            assert line == "\n" + sync_pages.status_line(stage) + "\n", stage.readme
    assert sync_pages.stale_pages(stages) == []


def test_the_readme_and_the_docs_home_give_every_stage_the_same_status():
    readme = _status_by_stage(_block(sync_pages.STAGES_BLOCK, "README.md")["body"])
    docs = _status_by_stage(_block(sync_pages.STAGES_BLOCK, "docs/index.md")["body"])
    declared = {s.number: s.label for s in sync_pages.load_stages()}
    assert readme == docs == declared


def test_a_stage_marked_done_has_its_runbook_tutorial_and_installed_bootstrap():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = {int(n) for n in pyproject["project"]["entry-points"]["tasklab.stages"]}
    nav = (ROOT / "mkdocs.yml").read_text()
    stages = sync_pages.load_stages()
    for stage in stages:
        if stage.status == "planned":
            continue
        assert (ROOT / stage.readme).exists(), stage.readme
        assert (ROOT / "docs" / stage.tutorial).exists(), stage.tutorial
        assert stage.tutorial in nav, f"{stage.tutorial} is not in the docs navigation"
        assert stage.number in installed, f"stage {stage.number} has no tasklab.stages entry"
    # And the other way round: an installed stage is not still called planned.
    landed = {s.number for s in stages if s.status != "planned"}
    assert installed <= landed, installed - landed


def test_the_readme_patterns_map_links_every_pattern_page():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Patterns → files", 1)[1].split("\n## ", 1)[0]
    linked = {link for link in LINK.findall(section) if link.startswith("docs/patterns/")}
    pages = {
        f"docs/patterns/{p.name}"
        for p in (ROOT / "docs" / "patterns").glob("*.md")
        if p.name != "index.md"
    }
    assert pages - linked == set(), f"pattern pages missing from the README map: {pages - linked}"


def test_every_file_the_readme_patterns_map_points_at_exists():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Patterns → files", 1)[1].split("\n## ", 1)[0]
    links = LINK.findall(section)
    assert len(links) > 20
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == [], missing
