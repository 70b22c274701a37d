"""A page's slow run is its fast run plus its Break-it steps, against a stack of its own: when a
session selects both (a full `make test`), the fast one would start the same services to run
the same steps again, so only the slow one runs. `-m "not slow"` keeps the fast one."""

from __future__ import annotations

import pytest

FAST = "test_the_runbook_runs_as_written_against_the_services_it_starts"
SLOW = "test_the_runbook_runs_as_written_with_its_slow_break_it_steps"


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_pages = {
        item.callspec.params["name"]
        for item in items
        if getattr(item, "originalname", None) == SLOW and hasattr(item, "callspec")
    }
    covered = [
        item
        for item in items
        if getattr(item, "originalname", None) == FAST
        and hasattr(item, "callspec")
        and item.callspec.params["name"] in slow_pages
    ]
    if covered:
        config.hook.pytest_deselected(items=covered)
        items[:] = [item for item in items if item not in covered]
