"""The one agent of every stage: takes attempts from its intake, runs them with an executor,
reports them to its event sink (common/ports/agent.py)."""

from common.agent.agent import Agent, Periodic

__all__ = ["Agent", "Periodic"]
