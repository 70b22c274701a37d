"""Helpers the stage 4 tests share (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import socket

import grpc

from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.proxy import TaskServiceProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub(address: str) -> pb_grpc.TaskServiceStub:
    return pb_grpc.TaskServiceStub(grpc.insecure_channel(address))


def shell(payload: str, **fields) -> pb.SubmitRequest:
    return pb.SubmitRequest(task_type=pb.SHELL, payload=payload, **fields)


def final_status(proxy: TaskServiceProxy, task_id: str, timeout: float = 30.0) -> int:
    events = list(proxy.watch(task_id, timeout=timeout))
    assert events and events[-1].WhichOneof("event") == "final", events[-1:]
    return events[-1].final.status
