"""Adapters: the real (Redis, ZooKeeper, Kafka) and in-memory implementations of the ports."""
