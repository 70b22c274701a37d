"""The generated gRPC code is built from proto/, never edited: it must match what the .proto
generates now (`python -m common.rpc.codegen` rewrites it; `make setup` runs that)."""

import shutil

import pytest

pytest.importorskip("grpc_tools", reason="the stage4 extra is not installed")

from common.rpc import codegen  # noqa: E402


def test_the_generated_code_is_fresh_against_the_proto():
    assert codegen.stale() == [], "run `python -m common.rpc.codegen`"


def test_an_edited_generated_file_is_reported_stale(tmp_path):
    copy = tmp_path / "gen"
    shutil.copytree(codegen.OUT, copy)
    target = copy / "task_service_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    (copy / "task_service_pb2_grpc.py").unlink()
    problems = codegen.stale(copy)
    assert len(problems) == 2
    assert any("task_service_pb2.py differs" in p for p in problems)
    assert any("task_service_pb2_grpc.py is missing" in p for p in problems)


def test_the_generated_service_imports_its_messages_from_its_own_package():
    text = (codegen.OUT / "task_service_pb2_grpc.py").read_text()
    assert "from . import task_service_pb2" in text and "from tasklab" not in text


def test_the_check_mode_exits_non_zero_only_when_stale(capsys):
    assert codegen.main(["--check"]) == 0
