"""Benchmarks: tasklab side by side with Celery on the same machine and the same Redis."""
