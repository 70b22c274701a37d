"""The runbook harness: how a page's marks are read, and how a run is checked (one bash, no
services)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from common.testing import runbook

PAGE = textwrap.dedent(
    """\
    # A page

    <!-- runbook: step name="greet" timeout=5
    expect: hello
    expect: re:^id \\d+$
    capture: ID = re:^id (\\d+)$ replaces 42
    -->
    ```console
    $ echo hello; \\
        echo id 7
    hello
    id 42
    $ echo "id is $ID"
    id is 42
    ```

    Prose between blocks.

    <!-- runbook: skip
      covered-by="tests/unit/test_runbook.py::test_a_skip_names_the_test_that_covers_it" -->
    ```console
    $ sleep 600
    ```

    ```python
    print("not a shell block")
    ```

    <!-- runbook: step name="slow one" slow -->
    ```console
    $ echo done
    done
    ```
    """
)


def test_a_step_reads_its_commands_their_shown_output_and_its_directives():
    book = runbook.parse(PAGE)
    greet = book.steps[0]
    assert greet.name == "greet" and greet.timeout == 5 and not greet.slow
    assert [c.text for c in greet.commands] == [
        "echo hello; \\\n    echo id 7",
        'echo "id is $ID"',
    ]
    assert greet.commands[0].shown_output == ("hello", "id 42")
    assert [e.text for e in greet.expects] == ["hello", "re:^id \\d+$"]
    assert greet.captures == [runbook.Capture("ID", "^id (\\d+)$", "42")]
    assert book.steps[1].slow


def test_a_skip_names_the_test_that_covers_it():
    book = runbook.parse(PAGE)
    (skipped,) = [b for b in book.blocks if b.kind == "skip"]
    assert skipped.covered_by.endswith("::test_a_skip_names_the_test_that_covers_it")
    assert runbook.covering_tests_exist(book, Path(__file__).parents[2]) == []


def test_a_covering_test_that_does_not_exist_is_reported():
    book = runbook.parse(PAGE.replace("test_a_skip_names", "test_gone_names"))
    assert runbook.covering_tests_exist(book, Path(__file__).parents[2]) == [
        "block at line 21: tests/unit/test_runbook.py has no "
        "test test_gone_names_the_test_that_covers_it"
    ]


def test_a_command_block_without_a_mark_is_reported_and_other_languages_are_not():
    book = runbook.parse(PAGE + "\n```console\n$ date\n```\n")
    assert book.unmarked == [len(PAGE.splitlines()) + 2]
    with pytest.raises(runbook.RunbookError, match="has commands but no runbook marker"):
        runbook.check_page(book)


def test_the_page_itself_must_show_what_a_step_expects():
    runbook.check_page(runbook.parse(PAGE))
    drifted = PAGE.replace("hello\nid 42", "hi\nid 42")
    with pytest.raises(runbook.RunbookError, match="the page does not show 'hello'"):
        runbook.check_page(runbook.parse(drifted))


def test_a_capture_must_find_the_literal_it_replaces_in_the_page():
    drifted = PAGE.replace("replaces 42", "replaces 43")
    with pytest.raises(runbook.RunbookError, match="finds '42' in the page, not '43'"):
        runbook.check_page(runbook.parse(drifted))


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        ("<!-- runbook: step timeout=5 -->", "a step needs name="),
        ("<!-- runbook: skip -->", "says covered-by= or why="),
        ('<!-- runbook: run name="x" -->', "unknown kind 'run'"),
        ('<!-- runbook: step name="x" retries=3 -->', "unknown attribute"),
        ('<!-- runbook: step name="x"\nexpected: y\n-->', "unknown directive"),
        ('<!-- runbook: step name="x"\ncapture: A = re:no group\n-->', "exactly one group"),
        ('<!-- runbook: step name="x"\nawait: cat f\n-->', "await: COMMAND TEXT => re:"),
        ('<!-- runbook: step name="x"\n', "never closed"),
    ],
)
def test_a_malformed_mark_is_a_clear_error(marker, error):
    with pytest.raises(runbook.RunbookError, match=error):
        runbook.parse(f"{marker}\n```console\n$ true\n```\n")


def test_a_mark_must_sit_right_above_its_block():
    with pytest.raises(runbook.RunbookError, match="not right above a block"):
        runbook.parse('<!-- runbook: step name="x" -->\nprose\n```console\n$ true\n```\n')


def test_expected_lines_are_found_in_order_literal_or_regex():
    expects = [runbook.Expect("a"), runbook.Expect("re:^b\\d$")]
    assert runbook.in_order(expects, ["x", "  a ", "b7"]) is None
    assert runbook.in_order(expects, ["b7", "a"]) == expects[1]


def run(tmp_path, page: str, **kwargs) -> list[runbook.StepResult]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    with runbook.RunbookRun(runbook.parse(page), tmp_path, env, **kwargs) as book_run:
        return book_run.run_all()


def test_a_run_checks_the_real_output_and_carries_captures_into_later_commands(tmp_path):
    results = run(tmp_path, PAGE)
    assert [r.block.name for r in results] == ["greet"]  # the slow step is left out
    assert results[0].output == ["hello", "id 7", "id is 7"]


def test_a_run_fails_when_the_real_output_drifts_from_the_page(tmp_path):
    drifted = PAGE.replace("echo id 7", "echo ident 7")
    with pytest.raises(runbook.RunbookError, match="expected 're:\\^id"):
        run(tmp_path, drifted)


def test_shell_state_and_the_exit_status_carry_from_command_to_command(tmp_path):
    page = textwrap.dedent(
        """\
        <!-- runbook: step name="state"
        expect: exit code 3
        expect: /work
        -->
        ```console
        $ export WHERE=/work; false || (exit 3)
        $ echo "exit code $?"
        exit code 3
        $ echo $WHERE
        /work
        ```
        """
    )
    assert run(tmp_path, page)[0].output == ["exit code 3", "/work"]


def test_await_re_runs_a_read_only_command_until_its_fact_is_true(tmp_path):
    page = textwrap.dedent(
        """\
        <!-- runbook: step name="wait" timeout=10
        await: cat flag => re:^ready$
        expect: ready
        -->
        ```console
        $ (sleep 1; echo ready > flag) &
        $ cat flag
        ready
        ```
        """
    )
    (result,) = run(tmp_path, page)
    assert result.output[-1] == "ready"


def test_a_command_that_outlives_its_timeout_fails_the_step(tmp_path):
    page = '<!-- runbook: step name="hang" timeout=1 -->\n```console\n$ sleep 30\n```\n'
    with pytest.raises(runbook.RunbookError, match="timed out after 1s: sleep 30"):
        run(tmp_path, page)


def test_background_processes_are_stopped_by_pid_when_the_run_ends(tmp_path):
    page = textwrap.dedent(
        """\
        <!-- runbook: step name="bg" -->
        ```console
        $ sleep 300 &
        $ echo $! > pid
        ```
        """
    )
    run(tmp_path, page)
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_value_put_in_for_one_literal_is_never_taken_for_another(tmp_path):
    # The page printed PIDs 9483 and 9484; the real ones may contain either as a substring.
    page = textwrap.dedent(
        """\
        <!-- runbook: step name="pids"
        capture: A = re:^a (\\d+)$ replaces 9483
        capture: B = re:^b (\\d+)$ replaces 9484
        -->
        ```console
        $ echo a 19484; echo b 7
        a 9483
        b 9484
        $ echo 9483 9484
        9483 9484
        ```
        """
    )
    assert run(tmp_path, page)[0].output[-1] == "19484 7"
