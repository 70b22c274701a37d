"""Configuration names the placement strategies without importing them (config sits below
scheduling in the layering), so the two lists are checked against each other here."""

from common.config import PLACEMENT_STRATEGIES
from common.scheduling.strategies import STRATEGIES


def test_configuration_accepts_exactly_the_registered_placement_strategies():
    assert set(PLACEMENT_STRATEGIES) == set(STRATEGIES)
