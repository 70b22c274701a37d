"""The metrics reference is generated from the metric definitions, and the committed page is
what they make now: a family added, renamed or re-labelled without running the tool fails."""

from __future__ import annotations

from common.observability.metrics import FAMILIES, Family
from tools import metricsdocs


def test_the_committed_metrics_reference_is_what_the_definitions_generate_now():
    assert metricsdocs.PAGE.exists(), "run `.venv/bin/python tools/metricsdocs.py`"
    assert metricsdocs.PAGE.read_text() == metricsdocs.page(), (
        "run `.venv/bin/python tools/metricsdocs.py`"
    )


def test_the_page_lists_every_family_with_its_type_labels_and_help():
    page = metricsdocs.page()
    for family in FAMILIES:
        labels = ", ".join(f"`{label}`" for label in family.labels) or "none"
        assert f"| `{family.name}` | {family.kind} | {labels} |" in page, family.name
        assert metricsdocs.cell(family.help) in page


def test_a_changed_help_text_changes_the_page():
    changed = [Family("tasklab_example_total", "counter", "Changed.", ("type",), ("agent",), "S")]
    page = metricsdocs.render(changed)
    assert "| `tasklab_example_total` | counter | `type` | agent | counted | Changed. |" in page
    assert page != metricsdocs.page()
