"""The Kafka event bus (introduced in stage 3): topics, message schemas, idempotent producers,
at-least-once consumers with a dead-letter topic, the scheduler's Kafka dispatch, the manager."""
