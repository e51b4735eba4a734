"""`pipescope run`: exit codes, text and JSON Lines output, argument errors."""

import argparse
import io
import json

import pytest

from pipecore.headless import add_run_arguments, run_command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipescope run")
    add_run_arguments(parser)
    return parser.parse_args(list(argv))


def test_jsonl_prints_one_protocol_event_per_line_and_exits_0() -> None:
    out = io.StringIO()
    code = run_command(parse("ping-pong", "--format", "jsonl"), out)
    assert code == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "completed"
    assert len([e for e in events if e["kind"] == "output"]) == 2


def test_text_prints_readable_lines_with_params() -> None:
    out = io.StringIO()
    assert run_command(parse("one-way", "--param", "messages=2"), out) == 0
    text = out.getvalue()
    assert "reader: got 'message 1'" in text
    assert "OSError: connection is read-only" in text
    assert text.rstrip().endswith("RUN completed: the scenario ran to completion")


def test_a_deadlocked_run_exits_1() -> None:
    out = io.StringIO()
    assert run_command(parse("deadlock", "--format", "jsonl", "--timeout", "20"), out) == 1
    assert '"state": "deadlock"' in out.getvalue()


def test_a_timed_out_run_exits_1() -> None:
    out = io.StringIO()
    assert run_command(parse("poll", "--param", "messages=50", "--timeout", "1"), out) == 1
    assert "RUN timeout" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["one-way", "--param", "messages=-3"],
            "messages must be an integer between 1 and 1000, got -3",
        ),
        (["one-way", "--param", "nope=1"], "unknown parameter 'nope' for one-way"),
        (["one-way", "--param", "messages"], "--param must be KEY=VALUE"),
        (["no-such"], "scenario must be one of"),
        (["ping-pong", "--timeout", "1000"], "timeout must be"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_command(parse(*argv), io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
