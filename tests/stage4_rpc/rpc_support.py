"""Helpers the stage 4 tests share (the platform class and plain functions; the fixtures are in
conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from common.client import TaskClient
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.proxy import TaskServiceProxy
from common.testing.platforms import RolePlatform, free_port, wait_for_api

__all__ = ["Stage4", "final_status", "free_port", "shell", "stub", "wait_for_api"]


@dataclass
class Stage4(RolePlatform):
    """The module's roles (common/testing/platforms.py), and a client of its Redis."""

    tasks: TaskClient | None = None


def stub(address: str) -> pb_grpc.TaskServiceStub:
    return pb_grpc.TaskServiceStub(grpc.insecure_channel(address))


def shell(payload: str, **fields) -> pb.SubmitRequest:
    return pb.SubmitRequest(task_type=pb.SHELL, payload=payload, **fields)


def final_status(proxy: TaskServiceProxy, task_id: str, timeout: float = 30.0) -> int:
    events = list(proxy.watch(task_id, timeout=timeout))
    assert events and events[-1].WhichOneof("event") == "final", events[-1:]
    return events[-1].final.status
