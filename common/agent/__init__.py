"""The agent: takes tasks, runs them with an executor, reports the outcome."""

from common.agent.agent import Agent, ClaimStrategy, ReliableClaim

__all__ = ["Agent", "ClaimStrategy", "ReliableClaim"]
