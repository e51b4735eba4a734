"""External runs: a program traced elsewhere streams in as a run, counts against the cap, ends."""

from typing import Any

import pytest

from pipecore.eventcheck import EventError
from pipecore.runs import CapacityError, NotControllable, RunManager, RunState, reason
from pipecore.scenarios import ParamError
from tests.unit.conftest import Event


def _out(run_id: str, seq: int, **fields: Any) -> Event:
    common = {"run": run_id, "seq": seq, "kind": "output", "t": seq, "pid": 9}
    return {**common, "process": "Main", "stream": "stdout", "text": f"line {seq}", **fields}


def test_an_external_run_publishes_what_its_tracer_streams_and_ends_with_it() -> None:
    runs = RunManager(max_runs=2)
    try:
        run = runs.open_external("prog.py")
        assert runs.get(run.id) is run and run.summary()["state"] == "starting"
        received: list[Event] = []
        _, unsubscribe = run.subscribe(received.extend)
        run.ingest([_out(run.id, 1, kind="run", state="running"), _out(run.id, 2)])
        assert run.state is RunState.RUNNING
        run.ingest([_out(run.id, 3, kind="verdict", verdict="eof", message="end a closed")])
        why = {"key": "program_exit", "args": {"program": "prog.py", "code": -9}}
        run.ingest(
            [_out(run.id, 4, kind="run", state="killed", message="killed by SIGKILL", reason=why)]
        )
        assert run.wait(0) is RunState.KILLED and run.message == "killed by SIGKILL"
        assert run.summary()["reason"] == why
        assert [e["seq"] for e in received] == [1, 2, 3, 4]
        assert run.summary()["verdicts"] == [{"verdict": "eof", "message": "end a closed"}]
        with pytest.raises(EventError, match="after the run ended"):
            run.ingest([_out(run.id, 5)])
        run.disconnect("gone")  # already ended: nothing changes
        assert run.summary()["state"] == "killed" and len(run.events()) == 4
        unsubscribe()
    finally:
        runs.shutdown()


def test_an_external_run_counts_against_the_cap_and_refuses_control() -> None:
    runs = RunManager(max_runs=1)
    try:
        run = runs.open_external("prog.py")
        with pytest.raises(CapacityError, match="at most 1 may run at once"):
            runs.start("ping-pong")
        with pytest.raises(CapacityError):
            runs.open_external("other.py")
        for control in (run.stop, run.step, lambda: run.set_step_mode(True)):
            with pytest.raises(NotControllable, match="traces a program running elsewhere"):
                control()
        with pytest.raises(ParamError, match="name must be a string of 1 to 120"):
            runs.open_external("")
        run.ingest([_out(run.id, 1)])
        run.disconnect("disconnected: the tracer left")
        assert run.state is RunState.FAILED
        assert run.events()[-1] == {**run.events()[-1], "seq": 2, "state": "failed",
                                    "message": "disconnected: the tracer left",
                                    "reason": {"key": "disconnected", "args": {}}}  # fmt: skip
        assert run.summary()["reason"] == {"key": "disconnected", "args": {}}
        assert runs.open_external("other.py").state is RunState.STARTING
    finally:
        runs.shutdown()


def test_shutdown_ends_an_external_run_still_streaming() -> None:
    runs = RunManager()
    run = runs.open_external("prog.py")
    runs.shutdown()
    assert run.wait(0) is RunState.FAILED
    assert run.message == "the server shut down while the program was being traced"


def test_a_refused_stream_ends_its_run_with_the_refusal() -> None:
    runs = RunManager()
    try:
        run = runs.open_external("prog.py")
        run.disconnect("refused: bad", reason("refused", error="bad"))
        assert run.events()[-1]["reason"] == {"key": "refused", "args": {"error": "bad"}}
    finally:
        runs.shutdown()
