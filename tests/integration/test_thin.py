"""The `thin` client frame on /ws: a viewer behind a flood gets thinned batches, then full ones."""

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection

from app.frames import thin
from app.hub import LiveHub
from app.models import MAX_THIN_KEEP, FrameError, parse_client_frame
from app.settings import Settings
from app.store import Store
from pipecore.parts import Part, encode_events, part_of, parts_of
from pipecore.runs import RunManager
from tests.integration.inprocess_hub import run_with_manager_and_store
from tests.integration.wsclient import receive, receive_until, start_run, viewer

Frame = dict[str, Any]
KEPT_KINDS = {"run", "pipe", "process", "attach", "verdict"}
KEEP = 50


def numbered(kinds: str, first: int = 1) -> list[Frame]:
    """Events of the given kinds, numbered on: c a call, x a close, e a call that raised,
    o an output line, p a pipe, v a verdict."""
    shapes: dict[str, Frame] = {
        "c": {"kind": "call", "op": "send", "phase": "end"},
        "x": {"kind": "call", "op": "close", "phase": "end"},
        "e": {"kind": "call", "op": "recv", "phase": "error"},
        "o": {"kind": "output", "text": "a line"},
        "p": {"kind": "pipe"},
        "v": {"kind": "verdict"},
    }
    return [{"seq": first + i, **shapes[k]} for i, k in enumerate(kinds)]


def test_thin_keeps_structure_closes_errors_lines_and_the_latest_calls() -> None:
    events = numbered("pcxcecvcc" + "c" * 20 + "oocccpc")
    parts = [part_of(events[:9]), part_of(events[9:29]), part_of(events[29:])]
    pieces, skipped = thin(parts, 5)
    got = json.loads(b"[" + b",".join(pieces) + b"]")
    # The pipe, the close, the error and the verdict of the oldest part; both lines; the
    # latest five plain calls.
    assert [e["seq"] for e in got] == [1, 3, 5, 7, 29, 30, 31, 32, 33, 34, 35, 36]
    assert skipped == len(events) - len(got) == 24
    # With room for everything, the parts go out as they are.
    assert thin(parts, 100) == ([p.json() for p in parts], 0)
    # Output lines have a quota of their own.
    lines = numbered("oooo")
    assert thin([part_of(lines)], 2) == ([encode_events(lines[2:])], 2)


def test_a_part_left_out_whole_is_never_decoded() -> None:
    class Undecodable(Part):
        __slots__ = ()

        def events(self) -> list[Frame]:
            raise AssertionError("a part of calls only, left out whole, was decoded")

    calls = numbered("c" * 10)
    whole = Undecodable(1, 10, 10, 10, text=encode_events(calls))
    newest = part_of(numbered("cc", first=11))
    pieces, skipped = thin([whole, newest], 2)
    assert (pieces, skipped) == ([newest.json()], 10)


@pytest.mark.parametrize("keep", [1, 500, MAX_THIN_KEEP, None])
def test_a_thin_frame_is_accepted_with_a_count_or_null(keep: int | None) -> None:
    frame = parse_client_frame(json.dumps({"type": "thin", "run": "r1", "keep": keep}), 1024)
    assert (frame.type, frame.run, frame.keep) == ("thin", "r1", keep)


@pytest.mark.parametrize(
    ("keep", "got"),
    [(0, "0"), (-3, "-3"), (MAX_THIN_KEEP + 1, "10001"), ("5", "'5'"), (True, "True"),
     (2.5, "2.5"), (..., "nothing")],
)  # fmt: skip
def test_bad_thin_counts_are_refused_naming_what_came(keep: object, got: str) -> None:
    frame: Frame = {"type": "thin", "run": "r1"}
    if keep is not ...:
        frame["keep"] = keep
    with pytest.raises(FrameError) as caught:
        parse_client_frame(json.dumps(frame), 1024)
    assert str(caught.value) == (
        f"thin: expected 'keep' to be null or an integer from 1 to {MAX_THIN_KEEP}, got {got}"
    )


def test_a_thinned_batch_is_built_once_for_every_viewer_that_wants_it() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        run = manager.start("ping-pong", {})
        try:
            hub.channel(run)
            parts = parts_of(numbered("p" + "c" * 1500))
            one = hub.thinned_frame(run.id, parts, KEEP)
            assert hub.thinned_frame(run.id, list(parts), KEEP) is one
            assert hub.thinned_frame(run.id, parts, KEEP + 1) is not one
            frame = json.loads(one)
            assert frame["skipped"] == 1500 - KEEP
            assert [e["seq"] for e in frame["events"]] == [1, *range(1502 - KEEP, 1502)]
        finally:
            await hub.close()
            run.wait(30)

    run_with_manager_and_store(scenario)


def ended(stretch: tuple[Frame, list[Frame]]) -> bool:
    """Whether a snapshot and the frames after it hold the run's completion."""
    snapshot, frames = stretch
    events = [e for f in [snapshot, *frames] for e in f["events"]]
    return any(e["kind"] == "run" and e["state"] == "completed" for e in events)


def error_after(ws: ClientConnection, frame: Frame) -> str:
    ws.send(json.dumps(frame))
    message: str = receive_until(ws, "error")["message"]
    return message


def test_bad_thin_frames_get_error_frames_and_the_connection_stays(live_server: str) -> None:
    run_id = start_run(live_server, step_mode=True)
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        assert error_after(ws, {"type": "thin", "run": run_id, "keep": 0}).endswith("got 0")
        assert error_after(ws, {"type": "thin", "run": "no-such-run", "keep": 5}) == (
            "thin: unknown run 'no-such-run'"
        )
        assert error_after(ws, {"type": "thin", "run": run_id, "keep": 5}) == (
            f"thin: expected a run this connection subscribes to, got {run_id!r}"
        )
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        assert receive_until(ws, "snapshot")["run"]["id"] == run_id
        ws.send(json.dumps({"type": "stop", "run": run_id}))


def test_a_thinned_viewer_gets_the_latest_calls_and_counts_then_every_event_again(
    live_server: str,
) -> None:
    # Held at its first call until the viewer asked for thinned batches: a flood can end
    # before a viewer subscribes.
    run_id = start_run(live_server, scenario="flood", params={"messages": 60_000}, step_mode=True)
    # Each snapshot (the first, and any resynchronising one a viewer that fell behind gets)
    # with the events frames that follow it. Taking every event again, this client (it
    # parses every frame) may fall behind a fast machine's flood and be resynchronised.
    stretches: list[tuple[Frame, list[Frame]]] = []
    with viewer(live_server, max_size=None) as ws:
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        stretches.append((receive_until(ws, "snapshot"), []))
        ws.send(json.dumps({"type": "thin", "run": run_id, "keep": KEEP}))
        ws.send(json.dumps({"type": "step_mode", "run": run_id, "on": False}))
        thinned = 0
        deadline = time.monotonic() + 90
        while not ended(stretches[-1]):
            assert time.monotonic() < deadline, "the flood never ended"
            frame = receive(ws)
            if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
                stretches.append((frame, []))
            if frame["type"] != "events" or frame["run"] != run_id:
                continue
            stretches[-1][1].append(frame)
            thinned += "skipped" in frame
            if thinned == 3 and "skipped" in frame:
                ws.send(json.dumps({"type": "thin", "run": run_id, "keep": None}))
    everything = httpx.get(f"{live_server}/api/runs/{run_id}/events", timeout=30).json()
    assert thinned >= 3, "expected thinned frames while the flood ran"
    frames = [f for _, stretch in stretches for f in stretch]
    for frame in frames:
        if "skipped" not in frame:
            continue
        # Besides the structure and every close or error, at most KEEP calls and KEEP lines.
        rest = [
            e
            for e in frame["events"]
            if e["kind"] not in KEPT_KINDS and e.get("op") != "close" and e.get("phase") != "error"
        ]
        assert sum(e["kind"] == "call" for e in rest) <= KEEP
        assert sum(e["kind"] == "output" for e in rest) <= KEEP
    # Every event is held or counted: the last snapshot's, the frames' after it, and the
    # calls and output lines they left out.
    snapshot, last = stretches[-1]
    held = snapshot["events"] + [e for f in last for e in f["events"]]
    seqs = [e["seq"] for e in held]
    assert seqs == sorted(set(seqs))
    left_out = snapshot.get("skipped", 0) + sum(f.get("skipped", 0) for f in last)
    assert len(held) + left_out == len(everything)
    by_seq = {e["seq"]: e for e in everything}
    # (A receive streamed before its send's record carries no `match` yet; the record does.)
    unmatched = [{k: v for k, v in e.items() if k not in ("match", "latency_ns")} for e in held]
    assert unmatched == [
        {k: v for k, v in by_seq[e["seq"]].items() if k not in ("match", "latency_ns")}
        for e in held
    ]
    assert [e for e in held if e["kind"] in KEPT_KINDS] == [
        e for e in everything if e["kind"] in KEPT_KINDS
    ]
    # Full again: after the last thinned frame every frame carries every event, with no gap
    # from one frame to the next (a resynchronising snapshot starts a new stretch).
    last_thinned = max(i for i, f in enumerate(frames) if "skipped" in f)
    full = {id(f) for f in frames[last_thinned + 1 :]}
    assert sum(len(f["events"]) for f in frames if id(f) in full) > KEEP * 3, (
        "expected full frames after asking for every event again"
    )
    for _, stretch in stretches:
        seqs = [e["seq"] for f in stretch if id(f) in full for e in f["events"]]
        if seqs:
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
