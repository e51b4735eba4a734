"""`pipescope run`: exit codes, text and JSON Lines output, argument errors."""

import argparse
import io
import json
from typing import Any

import pytest

from pipecore.headless import add_run_arguments, format_event, run_command
from pipecore.runs import Run, RunManager


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


def run_keeping_the_run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, list[str], Run]:
    """run_command's exit code and printed lines, and the run it started."""
    started: list[Run] = []
    start = RunManager.start

    def keep(self: RunManager, *args: Any, **kwargs: Any) -> Run:
        started.append(start(self, *args, **kwargs))
        return started[-1]

    monkeypatch.setattr(RunManager, "start", keep)
    out = io.StringIO()
    code = run_command(parse(*argv), out)
    [run] = started
    return code, out.getvalue().splitlines(), run


@pytest.mark.parametrize(
    ("options", "method"),
    [
        ((), "forkserver"),
        (("--start-method", "spawn"), "spawn"),
        (("--start-method", "fork"), "fork"),
    ],
    ids=["default", "spawn", "fork"],
)
def test_text_prints_one_line_per_event_of_a_run_with_the_chosen_start_method(
    monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...], method: str
) -> None:
    code, lines, run = run_keeping_the_run(monkeypatch, "ping-pong", *options)
    assert code == 0
    assert run.start_method == method  # forkserver when none is named
    events = run.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # Every event of the run, in order, one line each, times from the first event.
    assert lines == [format_event(e, events[0]["t"]) for e in events]
    assert len([line for line in lines if " send end " in line]) == 2
    assert lines[-1].endswith("RUN completed: the scenario ran to completion")


def test_a_thread_line_says_how_many_of_the_threads_are_queue_feeders() -> None:
    event = {"kind": "thread", "t": 2_500_000_000, "pid": 7, "process": "left", "op": "start"}
    assert format_event(event | {"threads": 2, "helpers": 1}, 0) == (
        "   2.500s left(7) thread start (2 threads: 1 Queue feeder)"
    )
    assert format_event(event | {"threads": 4, "helpers": 2}, 0).endswith(
        "(4 threads: 2 Queue feeders)"
    )
    assert format_event(event | {"threads": 2, "helpers": 0}, 0).endswith("(2 threads)")
    assert format_event(event | {"threads": 1}, 0).endswith("thread start (1 thread)")


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
