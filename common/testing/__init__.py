"""Test helpers shared by every stage's tests: service fixtures, `eventually`, role processes."""

from common.testing.processes import RoleProcess, process_alive
from common.testing.wait import eventually

__all__ = ["RoleProcess", "eventually", "process_alive"]
