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
        assert pump._settle([matched, waiting]) == []
        waiting["match"] = 5  # the analysis saw its send later, and annotated it in place
        assert pump._settle([]) == [waiting]
        assert pump._settle([]) == []
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
