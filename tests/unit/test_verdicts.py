"""Verdicts (pipecore.verdicts): killed processes and a broken pipe, over a hand-built stream."""

from __future__ import annotations

from pipecore.analysis import Analysis
from tests.unit.eventstream import Stream, kinds


def test_broken_pipe_and_killed_verdicts() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    exit_event = s.add(100, 12, "process", op="exit", exitcode=-9)
    s.add(101, 13, "process", op="exit", exitcode=0)
    s.add(
        102, 10, "process", op="exit", exitcode=None, killed=True
    )  # vanished, as the collector saw
    s.call(200, 11, "a", "send", "begin")
    err = s.call(210, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    s.call(220, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["killed", "killed", "eof"]
    assert verdicts[0]["message"] == "Process-2 (pid 12) was killed by signal 9 (SIGKILL)"
    assert verdicts[0]["events"] == [exit_event["seq"]]
    assert verdicts[1]["message"] == "MainProcess (pid 10) was killed"
    assert verdicts[2]["events"] == [err["seq"]] and verdicts[2]["end"] == "a"
    assert "BrokenPipeError in send on pipe p1 end a" in verdicts[2]["message"]
    # What the page tells in its own language.
    assert [v["reason"] for v in verdicts] == [
        {
            "key": "killed",
            "args": {"process": "Process-2", "pid": 12, "signum": 9, "signal": "SIGKILL"},
        },
        {
            "key": "killed",
            "args": {"process": "MainProcess", "pid": 10, "signum": None, "signal": ""},
        },
        {
            "key": "eof",
            "args": {
                "process": "Process-1", "error": "BrokenPipeError", "op": "send", "pipe": "p1",
                "end": "a",
            },
        },
    ]  # fmt: skip
    assert an.ends()["p1/a"]["state"] == "errored"
