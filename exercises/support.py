"""Finding what a learner writes, with a message that says what to write when it is not there
(a failed exercise, never an import error)."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def not_done(exercise: str, what: str) -> None:
    pytest.fail(f"Exercise {exercise} is not done yet: {what}", pytrace=False)


def module(exercise: str, name: str, what: str) -> ModuleType:
    """The module `name`, or the exercise fails saying what to write."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the learner's module exists and imports something missing: a real error
    not_done(exercise, what)
    raise AssertionError("not reached: not_done raises")


def attribute(exercise: str, owner: object, name: str, what: str):
    found = getattr(owner, name, None)
    if found is None:
        not_done(exercise, what)
    return found
