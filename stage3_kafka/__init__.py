"""Stage 3: the Kafka event bus: dispatch, status, heartbeats and logs; the manager service."""
