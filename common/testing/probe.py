"""What integration tests read back from Redis about a batch of tasks, in any stage."""

from __future__ import annotations

from collections import Counter

from common import keys
from common.client import TaskClient
from common.domain.transitions import TaskStatus


class TaskFacts:
    """Statuses, histories and logs of tasks, read with as few round trips as possible."""

    def __init__(self, redis_client, tasks: TaskClient) -> None:
        self.redis = redis_client
        self.tasks = tasks

    def statuses(self, task_ids) -> Counter[str]:
        pipe = self.redis.pipeline(transaction=False)
        for tid in task_ids:
            pipe.hget(keys.task(tid), "status")
        return Counter((s or b"?").decode() for s in pipe.execute())

    def all_succeeded(self, task_ids) -> bool:
        counts = self.statuses(task_ids)
        assert counts[TaskStatus.FAILED] == 0, counts
        return counts[TaskStatus.SUCCESS] == len(task_ids)

    def history(self, task_id: str) -> list[dict]:
        return self.tasks.store.history(task_id)

    def logs(self, task_id: str) -> list[str]:
        return self.tasks.store.logs(task_id)
