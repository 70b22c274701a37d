"""Helpers the stage 4 tests share (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import socket

import grpc
import httpx

from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.proxy import TaskServiceProxy
from common.testing import eventually
from common.testing.processes import RoleProcess


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


def wait_for_api(proc: RoleProcess, url: str, timeout: float = 30.0) -> None:
    """Until the API process answers /health (failing at once if it exited)."""

    def answers() -> bool:
        assert proc.alive(), f"{proc.name} exited:\n{proc.log_text()[-2000:]}"
        try:
            return httpx.get(url + "/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    eventually(answers, timeout, message=f"{proc.name} answers on {url}")
