"""Fixtures shared by the unit tests of the PYTHON_SCRIPT executor."""

from __future__ import annotations

import pytest

from common.executors import ExecutorLimits, PythonScriptExecutor


@pytest.fixture
def script_executor():
    """A PYTHON_SCRIPT executor (its warm zygote) that kills half a second after SIGTERM."""
    ex = PythonScriptExecutor(ExecutorLimits(kill_grace_seconds=0.5))
    yield ex
    ex.close()
