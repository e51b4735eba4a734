"""RunPump: what one drain of a run's collector makes of the events, as the server gets it."""

from __future__ import annotations

from pathlib import Path

from pipecore import collectwire
from pipecore.runpump import RunPump


def test_a_receive_matched_late_is_sent_again(tmp_path: Path) -> None:
    pump = RunPump(str(tmp_path / "run"), "r000001", 3, 10**9)
    try:
        matched = {"kind": "call", "op": "recv", "phase": "end", "seq": 2, "match": 1}
        waiting = {"kind": "call", "op": "recv_bytes", "phase": "end", "seq": 4}
        sending = {"kind": "call", "op": "send", "phase": "end", "seq": 5}
        failed = {"kind": "call", "op": "recv", "phase": "error", "seq": 6, "corrupt": "x"}
        pipe = {"kind": "pipe", "pipe": "p1", "seq": 7}
        assert pump._settle([matched, waiting, sending, failed, pipe]) == ([], [pipe])
        waiting["match"] = 5  # the analysis saw its send later, and annotated it in place
        assert pump._settle([]) == ([waiting], [])
        assert pump._settle([]) == ([], [])
    finally:
        pump.close(remove=True)
    assert not (tmp_path / "run").exists()


def test_a_backlog_goes_out_in_bounded_messages_in_order(tmp_path: Path) -> None:
    import time

    from pipecore import telemetry
    from pipecore.runpump import DRAIN_EVENTS

    run_dir = str(tmp_path / "run")
    pump = RunPump(run_dir, "r000002", 3, 10**9)
    reader = collectwire.MessageReader()
    sizes: list[int] = []
    texts: list[str] = []
    telemetry.activate(run_dir, "r000002")
    try:
        for n in range(5000):
            telemetry.record_event({"kind": "output", "stream": "stdout", "text": f"line {n}"})
        deadline = time.monotonic() + 30
        while len(texts) < 5000 and time.monotonic() < deadline:
            pieces = pump.pump(final=False)
            for message in reader.feed(b"".join(pieces or [])):
                sizes.append(sum(part.count for part in message.parts))
                for part in message.parts:
                    texts += [e["text"] for e in part.events() if e["kind"] == "output"]
            if not pump.busy:
                time.sleep(0.005)  # the collector holds events younger than its hold
    finally:
        telemetry.deactivate()
        pump.close(remove=True)
    assert texts == [f"line {n}" for n in range(5000)]
    assert max(sizes) <= DRAIN_EVENTS
    assert len([size for size in sizes if size]) >= 5000 // DRAIN_EVENTS


def test_verdicts_are_numbered_in_the_stream_and_later_events_follow_them(
    tmp_path: Path,
) -> None:
    import time

    from pipecore import telemetry

    run_dir = str(tmp_path / "run")
    pump = RunPump(run_dir, "r000003", 3, 10**9)
    reader = collectwire.MessageReader()
    events: list[dict[str, object]] = []

    def pump_until(text: str) -> None:
        deadline = time.monotonic() + 30
        while not any(e.get("text") == text for e in events) and time.monotonic() < deadline:
            for message in reader.feed(b"".join(pump.pump(final=False) or [])):
                for part in message.parts:
                    events.extend(part.events())
            if not pump.busy:
                time.sleep(0.005)  # the collector holds events younger than its hold

    telemetry.activate(run_dir, "r000003")
    try:
        # a process ended by a signal: the analysis adds a `killed` verdict after it
        telemetry.record_event({"kind": "process", "op": "exit", "exitcode": -9})
        telemetry.record_event({"kind": "output", "stream": "stdout", "text": "before"})
        pump_until("before")
        telemetry.record_event({"kind": "output", "stream": "stdout", "text": "after"})
        pump_until("after")
    finally:
        telemetry.deactivate()
        pump.close(remove=True)
    assert [e["seq"] for e in events] == list(range(3, 3 + len(events)))
    shown = [(e["kind"], e.get("text") or e.get("op") or e.get("verdict")) for e in events]
    assert shown == [
        ("process", "start"),
        ("process", "exit"),
        ("output", "before"),
        ("verdict", "killed"),
        ("output", "after"),
    ]
