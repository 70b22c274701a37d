"""`tasklab composite FILE` and `tasklab schedule create --file FILE` read their document the
same way (common/cli/shared.py: read_document): whatever is wrong with it is one line on
stderr and exit code 2, before any backend is asked."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from common.cli import main

COMMANDS = {
    "composite": lambda source: ["composite", source],
    "schedule": lambda source: ["schedule", "create", "--file", source],
}


@pytest.fixture(params=sorted(COMMANDS))
def tasklab(request, monkeypatch, tmp_path):
    """The command with its document from `source`; (exit code, stderr). No service runs and
    none is configured: reaching one would fail differently, and the test with it."""
    monkeypatch.setenv("TASKLAB_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TASKLAB_API_URL", "")
    runner = CliRunner()

    def run(source: str, stdin: bytes | None = None):
        result = runner.invoke(main.app, COMMANDS[request.param](source), input=stdin)
        return result.exit_code, result.stderr

    run.what = request.param
    return run


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    return stderr.removeprefix("error: ").rstrip("\n")


def test_a_missing_file_is_named_with_the_reason(tasklab, tmp_path):
    missing = tmp_path / "nowhere.json"
    code, stderr = tasklab(str(missing))
    assert code == 2
    assert one_line(stderr) == f"cannot read {missing}: No such file or directory"


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tasklab, tmp_path):
    # A directory: unreadable as a file whoever runs the test (root reads a mode-000 file).
    code, stderr = tasklab(str(tmp_path))
    assert code == 2
    assert one_line(stderr) == f"cannot read {tmp_path}: Is a directory"


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_bad_syntax_says_the_line_and_column(tasklab, tmp_path, via):
    text = b'{\n  "kind": "GROUP",\n  "children": [}\n'
    path = tmp_path / "bad.json"
    path.write_bytes(text)
    source, name = (str(path), str(path)) if via == "file" else ("-", "stdin")
    code, stderr = tasklab(source, stdin=text if via == "stdin" else None)
    assert code == 2
    message = one_line(stderr)
    assert message.startswith(f"{name}: not a JSON document (")
    assert "line 3 column 16" in message


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_bytes_that_are_not_utf8_say_where(tasklab, tmp_path, via):
    raw = b'{"name": "caf\xe9"}'
    path = tmp_path / "latin1.json"
    path.write_bytes(raw)
    source, name = (str(path), str(path)) if via == "file" else ("-", "stdin")
    code, stderr = tasklab(source, stdin=raw if via == "stdin" else None)
    assert code == 2
    assert one_line(stderr).startswith(
        f"{name}: not a JSON document (invalid UTF-8 at byte 13 ("
    ), stderr


def test_an_empty_document_is_said_to_be_empty(tasklab):
    code, stderr = tasklab("-", stdin=b" \n")
    assert code == 2
    assert one_line(stderr) == f"stdin: empty, not a {tasklab.what} document"


@pytest.mark.parametrize(
    ("text", "kind"),
    [(b"[1, 2]", "an array"), (b'"GROUP"', "a string"), (b"3", "a number"), (b"null", "null")],
)
def test_json_that_is_not_an_object_is_refused_naming_what_it_is(tasklab, tmp_path, text, kind):
    path = tmp_path / "list.json"
    path.write_bytes(text)
    code, stderr = tasklab(str(path))
    assert code == 2
    assert one_line(stderr) == f"{path}: a {tasklab.what} document is a JSON object, not {kind}"
