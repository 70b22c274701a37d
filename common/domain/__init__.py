"""The one domain every stage shares: tasks, their states and the legal transitions."""

from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskSpec,
    TaskType,
    TaskValidationError,
    parse_task_message,
)
from common.domain.transitions import (
    LEGAL_TRANSITIONS,
    TERMINAL_STATES,
    TaskStatus,
    is_legal,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "LEGAL_TRANSITIONS",
    "TERMINAL_STATES",
    "Task",
    "TaskSpec",
    "TaskStatus",
    "TaskType",
    "TaskValidationError",
    "is_legal",
    "parse_task_message",
]
