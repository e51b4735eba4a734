"""Each scenario's phenomenon, as the events of a real run of it show it."""

import platform
import re
from collections.abc import Iterator

import pytest

from pipecore.runs import RunManager, RunState
from tests.unit.conftest import START_METHODS, Event


@pytest.fixture(scope="module")
def manager() -> Iterator[RunManager]:
    runs = RunManager(max_runs=2)
    yield runs
    runs.shutdown()


def run_events(
    manager: RunManager, scenario: str, *, start_method: str = "forkserver", **params: object
) -> tuple[RunState, list[Event]]:
    run = manager.start(scenario, params, start_method=start_method)
    state = run.wait(60)
    return state, run.events()


def calls(events: list[Event], op: str | None = None, phase: str | None = None) -> list[Event]:
    return [
        e
        for e in events
        if e["kind"] == "call"
        and (op is None or e["op"] == op)
        and (phase is None or e["phase"] == phase)
    ]


def verdicts(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["kind"] == "verdict" and e["verdict"] == name]


@pytest.mark.parametrize("method", START_METHODS)
def test_ping_pong_exchanges_two_messages_fifo_and_prints_two_lines(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "ping-pong", start_method=method)
    assert state is RunState.COMPLETED
    sends = calls(events, "send", "end")
    recvs = calls(events, "recv", "end")
    # A send's `end` may be recorded after the peer already received it: match by seq.
    assert sorted(e["preview"] for e in sends) == ["'proc1'", "'proc2'"]
    assert [e["preview"] for e in recvs] == ["'proc1'", "'proc2'"]
    by_seq = {e["seq"]: e for e in sends}
    for got in recvs:
        sent = by_seq[got["match"]]
        assert got["hash"] == sent["hash"] and got["preview"] == sent["preview"]
        assert got["end"] != sent["end"]
    lines = [e["text"] for e in events if e["kind"] == "output"]
    assert len(lines) == 2
    assert re.fullmatch(
        r"进程proc2\(<Process name='Process-2' parent=\d+ started>\)收到 proc1", lines[0]
    )
    assert re.fullmatch(
        r"进程proc1\(<Process name='Process-1' parent=\d+ started>\)收到 proc2", lines[1]
    )


@pytest.mark.parametrize("method", START_METHODS)
def test_one_way_refuses_the_wrong_direction_on_each_end(manager: RunManager, method: str) -> None:
    state, events = run_events(manager, "one-way", start_method=method)
    assert state is RunState.COMPLETED
    errors = {(e["end"], e["op"], e["error_type"]) for e in calls(events, phase="error")}
    assert ("a", "send", "OSError") in errors  # a is the reader
    assert ("b", "recv", "OSError") in errors
    assert len(calls(events, "recv", "end")) == 4  # three messages and the None


@pytest.mark.parametrize("method", START_METHODS)
def test_bytes_shows_offsets_maxlength_and_buffer_too_short(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "bytes", start_method=method)
    assert state is RunState.COMPLETED
    text = "\n".join(e["text"] for e in events if e["kind"] == "output")
    assert "recv_bytes(): b'abcdef'" in text and "recv_bytes(): b'2345'" in text
    assert "BufferTooShort: the message is in e.args[0]: b'does not fit into 8 bytes'" in text
    assert "OSError: bad message length" in text
    types = {e["error_type"] for e in calls(events, phase="error")}
    assert {"BufferTooShort", "OSError"} <= types


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_race_corrupts_frames_and_completes(manager: RunManager, method: str) -> None:
    # Under fork the children inherit every end: the scenario's processes close the ones
    # they do not use, or the writers wait for ever and are killed (the run ended `killed`).
    # Two writers on one end corrupt a frame every time; two readers usually do too, but
    # not always (one may take several frames whole while the other waits), so only the
    # writers' pipe is asserted.
    state, events = run_events(manager, "race", start_method=method)
    assert state is RunState.COMPLETED, [e.get("message") for e in events if e["kind"] == "run"]
    assert verdicts(events, "killed") == []
    pipe = next(e["pipe"] for e in events if e.get("pipe_name") == "two writers")
    assert any(v.get("pipe") == pipe for v in verdicts(events, "corrupt")) or any(
        "corrupt" in e and e["pipe"] == pipe for e in calls(events)
    )
    assert any("CORRUPTED" in e["text"] for e in events if e["kind"] == "output")


def test_race_locked_delivers_every_frame_intact(manager: RunManager) -> None:
    state, events = run_events(manager, "race-locked", frames=60)
    assert state is RunState.COMPLETED
    assert verdicts(events, "corrupt") == []
    assert not any("corrupt" in e for e in calls(events))
    assert len(calls(events, "recv_bytes", "end")) == 4 * 60 + 2


@pytest.mark.parametrize("method", START_METHODS)
def test_backpressure_blocks_the_producer_with_the_pipe_full(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(
        manager, "backpressure", start_method=method, messages=12, delay=0.05
    )
    assert state is RunState.COMPLETED
    pipe = next(e for e in events if e["kind"] == "pipe")
    assert pipe["transport"] == "os.pipe" and pipe["capacity"] == 65536
    frame = max(e["nbytes"] for e in calls(events, "send", "end"))
    # Full: the bytes waiting in the kernel leave no room for one more frame.
    queued = [e["queued"] for e in calls(events, "recv", "begin")]
    assert any(q + frame > pipe["capacity"] for q in queued)
    # The producer sat in send while the consumer received: it was blocked.
    order = [(e["process"], e["op"], e["phase"]) for e in calls(events)]
    blocked = False
    for i, step in enumerate(order):
        if step == ("producer", "send", "begin"):
            after = order[i + 1 :]
            end = after.index(("producer", "send", "end"))
            blocked = blocked or ("consumer", "recv", "end") in after[:end]
    assert blocked


@pytest.mark.parametrize("method", START_METHODS)
def test_eof_shows_eoferror_brokenpipe_and_the_killed_worker(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "eof", start_method=method, kill_after=0.2)
    # The main process carries on without the chatter, but a worker was killed: issue #7.
    assert state is RunState.KILLED
    types = [e["error_type"] for e in calls(events, phase="error")]
    assert types.count("EOFError") == 2
    assert "BrokenPipeError" in types
    exits = [e for e in events if e["kind"] == "process" and e["op"] == "exit"]
    assert any(e.get("exitcode") == -9 or e.get("killed") for e in exits)
    assert verdicts(events, "killed")
    chatter = next(e["pid"] for e in events if e["kind"] == "process" and e["process"] == "chatter")
    assert events[-1]["state"] == "killed"
    assert re.fullmatch(
        rf"chatter \(pid {chatter}\) was killed( by signal 9 \(SIGKILL\))?; "
        "the main process carried on and exited with 0",
        events[-1]["message"],
    ), events[-1]["message"]
    why = events[-1]["reason"]
    assert why["key"] == "worker_killed" and why["args"]["signal"] in ("", "SIGKILL")
    assert why["args"] == {**why["args"], "process": "chatter", "pid": chatter, "code": 0}


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("variant", ["recv-recv", "send-send"])
def test_deadlock_is_detected_and_ends_the_run(
    manager: RunManager, variant: str, method: str
) -> None:
    state, events = run_events(manager, "deadlock", start_method=method, variant=variant)
    assert state is RunState.DEADLOCK
    found = verdicts(events, "deadlock")
    assert found and {c["process"] for c in found[0]["cycle"]} == {"left", "right"}
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "deadlock"
    assert events[-1]["reason"] == {"key": "deadlock", "args": {}}


@pytest.mark.parametrize(
    ("scenario_id", "line"),
    [
        ("pipeline", "sink: got the sentinel, pipeline drained"),
        ("lock-queue", "items from the Queue"),
    ],
)
def test_other_scenarios_complete_and_print_their_point(
    manager: RunManager, scenario_id: str, line: str
) -> None:
    state, events = run_events(manager, scenario_id)
    assert state is RunState.COMPLETED
    assert any(line in e["text"] for e in events if e["kind"] == "output")


@pytest.mark.parametrize("method", START_METHODS)
def test_big_payload_delivers_tens_of_mib_and_refuses_a_lambda(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "big-payload", start_method=method)
    assert state is RunState.COMPLETED
    received = [e["nbytes"] for e in calls(events, "recv", "end")]
    assert max(received) > 48 * 2**20  # the 48 MiB object's pickle
    assert len(received) == 8  # seven sizes and "done"
    lines = [e["text"] for e in events if e["kind"] == "output" and e["process"] == "receiver"]
    assert len([line for line in lines if line.endswith("arrived intact")]) == 7
    # The run's own finding about the documented ~32 MiB limit, on this Python.
    assert lines[-1] == (
        f"receiver: on {platform.system()} with Python {platform.python_version()}, every frame "
        "up to 48 MiB arrived intact: the ~32 MiB warning did not apply (a frame under 2 GiB "
        "carries a 4-byte length header, a larger one an 8-byte header)"
    )
    failed = [e for e in calls(events, "send", "error")]
    assert len(failed) == 1 and "lambda" in failed[0]["error"]
    assert all("nbytes" not in e for e in failed)  # nothing entered the pipe


def test_lock_queue_shows_the_queues_own_pipe(manager: RunManager) -> None:
    state, events = run_events(manager, "lock-queue", items=3)
    assert state is RunState.COMPLETED
    names = {e["pipe_name"] for e in events if e["kind"] == "pipe"}
    assert {"locked Pipe", "Queue's own pipe"} <= names
    queue_pipe = next(e["pipe"] for e in events if e.get("pipe_name") == "Queue's own pipe")
    assert len([e for e in calls(events, "send_bytes", "end") if e["pipe"] == queue_pipe]) == 8


# Two writers sharing one end of an os.pipe, sending 64 KiB frames as fast as they can: the
# header and the payload go out in separate writes, and the other writer's bytes land between
# them. The reader checks each frame in Python (milliseconds for 64 KiB), so 200 frames keep
# the first writer sending well after the second has started, under spawn too.
CUSTOM_PAIR: dict[str, object] = {
    "duplex": False, "writers": 2, "size": 65536, "rate": 0.0, "count": 200,
}  # fmt: skip


def _reader_counts(events: list[Event]) -> list[tuple[int, int]]:
    """Each reader's (intact, corrupted) frame counts, as it printed them."""
    found = [
        re.fullmatch(r"reader \d+: (\d+) intact frames, (\d+) corrupted", e["text"])
        for e in events
        if e["kind"] == "output"
    ]
    return [(int(m[1]), int(m[2])) for m in found if m]


def run_custom(
    manager: RunManager, params: dict[str, object], method: str = "forkserver"
) -> tuple[RunState, list[Event]]:
    return run_events(manager, "custom", start_method=method, **params)


@pytest.mark.parametrize("method", START_METHODS)
def test_custom_pair_without_a_lock_corrupts_frames(manager: RunManager, method: str) -> None:
    state, events = run_custom(manager, {**CUSTOM_PAIR, "readers": 1, "lock": False}, method)
    # Under fork the writers inherit the readers' end: they close it, so that when the reader
    # stops at a corrupted frame they get BrokenPipeError, rather than wait to be killed.
    assert state is RunState.COMPLETED, [e.get("message") for e in events if e["kind"] == "run"]
    assert verdicts(events, "killed") == []
    pipe = next(e["pipe"] for e in events if e.get("pipe_name") == "custom pair")
    flagged = [e for e in calls(events, "recv_bytes", "end") if "corrupt" in e]
    assert flagged and {e["pipe"] for e in flagged} == {pipe}
    assert [v for v in verdicts(events, "corrupt") if v["pipe"] == pipe]
    [(_, corrupted)] = _reader_counts(events)
    assert corrupted >= 1


def test_custom_pair_with_a_lock_delivers_every_frame_intact(manager: RunManager) -> None:
    state, events = run_custom(manager, {**CUSTOM_PAIR, "count": 50, "readers": 2, "lock": True})
    assert state is RunState.COMPLETED
    assert verdicts(events, "corrupt") == []
    assert not any("corrupt" in e for e in calls(events))
    pipe = next(e["pipe"] for e in events if e.get("pipe_name") == "custom pair")
    got = _matched_fifo(events, pipe, one_writer=False)
    assert len(got) == 2 * 50 + 2  # every frame and one end-of-work frame per reader
    counts = _reader_counts(events)
    assert len(counts) == 2 and sum(intact for intact, _ in counts) == 2 * 50
    assert all(corrupted == 0 for _, corrupted in counts)


@pytest.mark.parametrize(
    "params",
    [
        {"topology": "pipeline", "stages": 2},
        {"topology": "fan-in", "writers": 3},
        {"topology": "pipeline", "stages": 2, "duplex": False, "size": 65536},
    ],
    ids=["pipeline", "fan-in", "one-way pipeline of 64 KiB frames"],
)
def test_custom_topologies_end_with_every_message_matched(
    manager: RunManager, params: dict[str, object]
) -> None:
    count = 20
    state, events = run_custom(manager, {**params, "rate": 0.0, "count": count})
    assert state is RunState.COMPLETED
    assert verdicts(events, "corrupt") == []
    pipes = [e["pipe"] for e in events if e["kind"] == "pipe"]
    assert len(pipes) == (3 if params["topology"] == "pipeline" else params["writers"])
    for pipe in pipes:
        # The source (or writer) sends, then main sends the end-of-work frame after it exits.
        got = _matched_fifo(events, pipe, one_writer=False)
        sent = [e for e in calls(events, phase="end") if e["pipe"] == pipe and "send" in e["op"]]
        assert len(got) == len(sent) == count + 1
        assert got[-1]["nbytes"] == 0  # the end-of-work frame, last on every pipe


def _matched_fifo(events: list[Event], pipe: str, *, one_writer: bool = True) -> list[Event]:
    """The pipe's received frames, each matched to a send with an equal hash: with one
    writer, the next one sent (with several, a send's end may be stamped after another's
    that reached the pipe later, so only each match is checked)."""
    sent = [e for e in calls(events, phase="end") if e["pipe"] == pipe and "send" in e["op"]]
    got = [e for e in calls(events, phase="end") if e["pipe"] == pipe and "recv" in e["op"]]
    by_seq = {e["seq"]: e for e in sent}
    assert len({e["match"] for e in got}) == len(got)
    assert all(by_seq[e["match"]]["hash"] == e["hash"] for e in got)
    if one_writer:
        assert [e["match"] for e in got] == [e["seq"] for e in sent][: len(got)]
    return got


@pytest.mark.parametrize("method", START_METHODS)
def test_poll_times_out_then_finds_a_frame_and_recv_does_not_wait(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "poll", start_method=method)
    assert state is RunState.COMPLETED
    polls = [e for e in calls(events, "poll", "end") if e["process"] == "consumer"]
    assert {e["timeout"] for e in polls} == {0.25}
    assert {e["result"] for e in polls} == {True, False}  # timed out, and found a frame
    assert any("consumer: nothing within" in e["text"] for e in events if e["kind"] == "output")
    # Every receive came right after a poll that said True, and the stream is intact.
    got = _matched_fifo(events, polls[0]["pipe"])
    assert len(got) == 9  # 8 ticks and the None that ends them
    assert [e["type"] for e in got][-1] == "NoneType"


def test_pipeline_passes_the_sentinel_through_every_stage(manager: RunManager) -> None:
    state, events = run_events(manager, "pipeline")
    assert state is RunState.COMPLETED
    links = [e["pipe"] for e in events if e["kind"] == "pipe"]
    assert len(links) >= 3
    for pipe in links:
        got = _matched_fifo(events, pipe)
        assert got and got[-1]["type"] == "NoneType"  # the sentinel, last on every link
        assert all(e["type"] == "int" for e in got[:-1])


@pytest.mark.parametrize("method", START_METHODS)
def test_fan_in_takes_from_every_producer_until_each_is_done(
    manager: RunManager, method: str
) -> None:
    state, events = run_events(manager, "fan-in", start_method=method)
    assert state is RunState.COMPLETED
    pipes = [e["pipe"] for e in events if e["kind"] == "pipe"]
    assert len(pipes) == 3
    for pipe in pipes:
        got = _matched_fifo(events, pipe)
        assert {e["process"] for e in got} == {"consumer"}
        assert [e["type"] for e in got] == ["str"] * 5 + ["NoneType"]
    printed = [e["text"] for e in events if e["kind"] == "output"]
    assert "consumer: every producer is done" in printed[-1]


def test_lock_queue_delivers_every_item_intact(manager: RunManager) -> None:
    state, events = run_events(manager, "lock-queue")
    assert state is RunState.COMPLETED
    assert verdicts(events, "corrupt") == []
    for pipe in {e["pipe"] for e in events if e["kind"] == "pipe"}:
        _matched_fifo(events, pipe, one_writer=False)
