"""The websocket /ws on a real `pipescope serve`, with a websockets client and the real runs."""

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app.hub import LiveHub
from app.live import replay
from app.models import FrameError, parse_client_frame
from app.settings import Settings
from app.store import Store
from app.viewer import MAX_OUTBOX, OVERFLOW_REASON, RESYNC_TAIL, Viewer
from pipecore.baserun import LIVE_EVENTS
from pipecore.runs import RunManager
from tests.conftest import StartServer


def run_with_manager_and_store(
    scenario: Callable[[RunManager, Store], Coroutine[Any, Any, None]],
    *,
    store: Store | None = None,
    live_events: int = LIVE_EVENTS,
) -> None:
    """Run an in-process hub scenario with a one-run manager and a store (in memory
    unless given), both shut down afterwards."""
    manager = RunManager(max_runs=1, live_events=live_events)
    store = Store(":memory:") if store is None else store
    try:
        asyncio.run(scenario(manager, store))
    finally:
        manager.shutdown()
        store.close()


Frame = dict[str, Any]
TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://", 1) + "/ws" + query


@contextmanager
def viewer(base: str, query: str = "", **options: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(base, query), open_timeout=10, **options) as ws:
        yield ws


def receive(ws: ClientConnection, timeout: float = 30.0) -> Frame:
    frame: Frame = json.loads(ws.recv(timeout=timeout))
    return frame


def receive_until(ws: ClientConnection, wanted: str, timeout: float = 30.0) -> Frame:
    """The next frame of type `wanted`, skipping others (runs broadcasts, ...)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = receive(ws, max(0.1, deadline - time.monotonic()))
        if frame["type"] == wanted:
            return frame


def start_run(base: str, **body: Any) -> str:
    response = httpx.post(f"{base}/api/runs", json={"scenario": "ping-pong", **body}, timeout=30)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def test_hello_snapshot_then_events_until_the_run_completes(live_server: str) -> None:
    with viewer(live_server) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello"
        assert isinstance(hello["runs"], list) and hello["version"]

        # Step mode holds the run at its first call, so the viewer sees it from the start.
        run_id = start_run(live_server, step_mode=True)
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
        assert snapshot["run"]["id"] == run_id
        ws.send(json.dumps({"type": "step_mode", "run": run_id, "on": False}))
        frames, events = follow_more(ws, run_id, list(snapshot["events"]))

    assert [e["state"] for e in events if e["kind"] == "run"][-1] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    batches = [f["events"] for f in frames if f["type"] == "events"]
    assert batches and all(batch for batch in batches)
    # The stream is causal (a receive follows its send), so a receive is streamed with its
    # `match` and `latency_ns` already set: what the viewer got is the record, field for field.
    assert events == httpx.get(f"{live_server}/api/runs/{run_id}/events").json()
    received = [e for e in events if e["kind"] == "call" and e["op"] == "recv"]
    assert all("match" in e for e in received if e["phase"] == "end")


def test_events_frames_are_binary_utf8_json_and_the_others_text(live_server: str) -> None:
    kinds: dict[str, set[type]] = {}
    with viewer(live_server) as ws:
        run_id = start_run(live_server)
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        ended = False
        while not ended:
            message = ws.recv(timeout=30)
            frame = json.loads(message)
            kinds.setdefault(frame["type"], set()).add(type(message))
            if frame["type"] == "events" and frame["run"] == run_id:
                ended = any(
                    e["kind"] == "run" and e["state"] == "completed" for e in frame["events"]
                )
                # Chinese output arrives as written: the bytes are UTF-8.
                for event in frame["events"]:
                    if event["kind"] == "output" and "收到" in event["text"]:
                        assert "收到".encode() in message
    assert kinds["events"] == {bytes}
    assert kinds["hello"] == kinds["snapshot"] == {str}


def follow_more(
    ws: ClientConnection, run_id: str, events: list[Frame]
) -> tuple[list[Frame], list[Frame]]:
    frames: list[Frame] = []
    while not any(e["kind"] == "run" and e["state"] in TERMINAL for e in events):
        frame = receive(ws)
        frames.append(frame)
        if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
            events = list(frame["events"])
        elif frame["type"] == "events" and frame["run"] == run_id:
            events = events + frame["events"]
    return frames, events


def test_runs_frames_announce_a_run_and_its_end(live_server: str) -> None:
    with viewer(live_server) as ws:
        assert receive(ws)["type"] == "hello"
        run_id = start_run(live_server)
        states: list[str] = []
        while not states or states[-1] not in TERMINAL:
            frame = receive_until(ws, "runs")
            states += [run["state"] for run in frame["runs"] if run["id"] == run_id]
    assert states[-1] == "completed"


def test_stop_over_the_websocket_ends_the_run(live_server: str) -> None:
    run_id = start_run(live_server, step_mode=True)
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        receive_until(ws, "snapshot")
        ws.send(json.dumps({"type": "stop", "run": run_id}))
        _, events = follow_more(ws, run_id, [])
    assert [e["state"] for e in events if e["kind"] == "run"][-1] == "stopped"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("not json", "frame is not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"type": "dance", "run": "x"}', "expected 'type' to be one of subscribe"),
        ('{"type": "subscribe"}', "subscribe: expected 'run' to be a run id string, got None"),
        ('{"type": "subscribe", "run": 7}', "got 7"),
        ('{"type": "step_mode", "run": "x", "on": "yes"}', "expected 'on' to be true or false"),
        ('{"type": "subscribe", "run": "' + "x" * 70_000 + '"}', "frame too large"),
    ],
)
def test_frame_checks_name_the_problem(sent: str, expected: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(sent, max_bytes=64 * 1024)
    assert expected in str(caught.value)


def test_malformed_frames_get_error_frames_and_the_connection_stays_usable(
    live_server: str,
) -> None:
    run_id = start_run(live_server)
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        bad: list[str | bytes] = [
            "not json",
            '{"type": "dance", "run": "x"}',
            '{"type": "subscribe", "run": "no-such-run"}',
            '{"type": "subscribe", "run": "' + "x" * 70_000 + '"}',
            b"\x00\x01",
        ]
        messages = []
        for frame in bad:
            ws.send(frame)
            messages.append(receive_until(ws, "error")["message"])
        assert messages[0].startswith("frame is not JSON")
        assert messages[1].startswith("expected 'type' to be one of")
        assert messages[2] == "subscribe: unknown run 'no-such-run'"
        assert messages[3].startswith("frame too large: expected at most 65536 bytes")
        assert messages[4] == "expected a text frame holding JSON, got a binary frame"

        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
        assert snapshot["run"]["id"] == run_id


def test_a_foreign_origin_is_refused_and_the_own_origin_accepted(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as caught, viewer(live_server, origin="http://evil.example"):
        pass
    assert caught.value.response.status_code == 403
    with viewer(live_server, origin=live_server) as ws:
        assert receive(ws)["type"] == "hello"


def test_allowed_origins_admit_another_site(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_ALLOWED_ORIGINS": "http://localhost:5173"})
    with viewer(server.url, origin="http://localhost:5173") as ws:
        assert receive(ws)["type"] == "hello"


def test_the_token_guards_the_websocket_and_the_api(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_TOKEN": "s3cret"})
    with pytest.raises(InvalidStatus) as caught, viewer(server.url):
        pass
    assert caught.value.response.status_code == 403
    with pytest.raises(InvalidStatus), viewer(server.url, "?token=wrong"):
        pass
    with viewer(server.url, "?token=s3cret") as ws:
        assert receive(ws)["type"] == "hello"

    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/api/runs").status_code == 401
    authorised = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{server.url}/api/runs", headers=authorised).status_code == 200


def test_a_recorded_run_outlives_a_restart_and_replays(
    start_server: StartServer, tmp_path: Path
) -> None:
    env = {"PIPESCOPE_DB": str(tmp_path / "runs.sqlite3")}
    first = start_server(env)
    run_id = start_run(first.url)
    deadline = time.monotonic() + 60
    while httpx.get(f"{first.url}/api/runs/{run_id}").json()["state"] not in TERMINAL:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    events = httpx.get(f"{first.url}/api/runs/{run_id}/events").json()
    first.stop()

    second = start_server(env)
    listed = {run["id"]: run for run in httpx.get(f"{second.url}/api/runs").json()}
    assert listed[run_id]["state"] == "completed"
    assert listed[run_id]["events"] == len(events)
    detail = httpx.get(f"{second.url}/api/runs/{run_id}").json()
    assert detail["analysis"]["ends"], detail
    assert httpx.get(f"{second.url}/api/runs/{run_id}/events").json() == events
    refused = httpx.post(f"{second.url}/api/runs/{run_id}/stop")
    assert refused.status_code == 409 and "earlier server" in refused.json()["detail"]
    with viewer(second.url) as ws:
        assert run_id in [run["id"] for run in receive_until(ws, "hello")["runs"]]
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
    assert snapshot["run"]["state"] == "completed"
    assert snapshot["events"] == events


class NetworkSocket:
    """Stands in for a viewer's websocket: records what is sent; `stall` holds every send."""

    def __init__(self, stalled: bool) -> None:
        self.sent: list[Frame] = []
        self.closed: tuple[int, str] | None = None
        self.flowing = asyncio.Event()
        if not stalled:
            self.flowing.set()

    async def send_text(self, text: str) -> None:
        await self.flowing.wait()
        self.sent.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        await self.flowing.wait()
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def held_events(self, run_id: str) -> list[Frame]:
        """What a page would hold: the last snapshot and the events after it."""
        events: list[Frame] = []
        for frame in self.sent:
            if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
                events = list(frame["events"])
            elif frame["type"] == "events" and frame["run"] == run_id:
                events += frame["events"]
        return events


def test_a_stalled_viewer_stays_bounded_and_never_holds_up_another() -> None:
    limit = 20

    async def scenario(manager: RunManager, store: Store) -> None:
        settings = Settings(db=":memory:", viewer_backlog=limit, viewer_fps=50)
        hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
        stalled_socket, healthy_socket = NetworkSocket(stalled=True), NetworkSocket(stalled=False)
        stalled = Viewer(hub, cast(WebSocket, stalled_socket))
        healthy = Viewer(hub, cast(WebSocket, healthy_socket))
        senders = [asyncio.create_task(v.send_forever()) for v in (stalled, healthy)]
        try:
            run = manager.start("backpressure", {"messages": 12, "delay": 0.01}, step_mode=True)
            stalled.subscribe(run)
            healthy.subscribe(run)
            run.set_step_mode(False)
            deadline = time.monotonic() + 60
            largest = 0
            # The healthy viewer holds the whole run while the other one is stuck.
            while not run.state.terminal or healthy_socket.held_events(run.id) != run.events():
                assert time.monotonic() < deadline, "the healthy viewer never got the whole run"
                largest = max(largest, stalled.backlog)
                await asyncio.sleep(0.01)
            assert not any("notice" in f for f in healthy_socket.sent)
            assert largest <= limit
            assert stalled_socket.sent == []

            stalled_socket.flowing.set()
            while stalled_socket.held_events(run.id) != run.events():
                assert time.monotonic() < deadline, "the stalled viewer never caught up"
                await asyncio.sleep(0.01)
            notices = [f["notice"] for f in stalled_socket.sent if "notice" in f]
            assert notices and f"fell more than {limit} events behind" in notices[0]
        finally:
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            stalled.unsubscribe_all()
            healthy.unsubscribe_all()

    run_with_manager_and_store(scenario)


def test_a_viewer_that_never_reads_is_dropped_with_a_reason_not_buffered_forever() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=True)
        stuck = Viewer(hub, cast(WebSocket, socket))
        sender = asyncio.create_task(stuck.send_forever())
        try:
            run = manager.start("ping-pong", {})
            for _ in range(50):  # re-subscribing never stacks up snapshots of one run
                stuck.subscribe(run)
            assert sum(f["type"] == "snapshot" for f in stuck.outbox) == 1
            for n in range(MAX_OUTBOX + 100):  # answers to a flood it never reads
                stuck.push({"type": "error", "message": f"bad frame {n}"})
            assert len(stuck.outbox) <= MAX_OUTBOX and stuck.overflowed
            assert stuck.subscriptions == {}
            socket.flowing.set()
            await asyncio.wait_for(sender, 10)
            assert socket.closed == (1008, OVERFLOW_REASON)
            run.wait(30)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    run_with_manager_and_store(scenario)


KEPT_KINDS = {"run", "pipe", "process", "attach", "verdict"}


def test_a_resynchronising_snapshot_is_bounded_and_counts_what_it_skipped() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        settings = Settings(db=":memory:", viewer_backlog=100, viewer_fps=50)
        hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=True)
        late = Viewer(hub, cast(WebSocket, socket))
        sender = asyncio.create_task(late.send_forever())
        try:
            run = manager.start("flood", {"messages": 2000})
            late.subscribe(run)
            deadline = time.monotonic() + 60
            while not run.state.terminal or late.behind == set():
                assert time.monotonic() < deadline, "the run never ended"
                await asyncio.sleep(0.01)
            socket.flowing.set()
            while (
                not socket.held_events(run.id)
                or socket.held_events(run.id)[-1] != (run.events()[-1])
            ):
                assert time.monotonic() < deadline, "the viewer never caught up"
                await asyncio.sleep(0.01)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            late.unsubscribe_all()

        everything = run.events()
        resyncs = [f for f in socket.sent if f["type"] == "snapshot" and "skipped" in f]
        assert resyncs, [f.get("notice") for f in socket.sent if f["type"] == "snapshot"]
        snapshot = resyncs[0]
        events = snapshot["events"]
        total = events[-1]["seq"]
        others = [e for e in events if e["kind"] not in KEPT_KINDS]
        # Every kept event up to the snapshot's last, then only the newest calls and lines.
        assert [e for e in events if e["kind"] in KEPT_KINDS] == [
            e for e in everything[:total] if e["kind"] in KEPT_KINDS
        ]
        assert len(others) <= RESYNC_TAIL
        assert (
            others == [e for e in everything[:total] if e["kind"] not in KEPT_KINDS][-len(others) :]
        )
        skipped = total - len(events)
        assert skipped > 0 and snapshot["skipped"] == skipped
        assert snapshot["notice"] == (
            f"fell more than 100 events behind: showing {len(events):,} of {total:,} events, "
            f"{skipped:,} older calls and output lines skipped"
        )
        # What follows the snapshot continues it without a gap.
        assert [e["seq"] for e in socket.held_events(run.id) if e["seq"] > total] == list(
            range(total + 1, everything[-1]["seq"] + 1)
        )

    run_with_manager_and_store(scenario)


def test_the_first_snapshot_holds_what_the_run_keeps_and_says_what_it_left_out() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=False)
        late = Viewer(hub, cast(WebSocket, socket))
        run = manager.start("flood", {"messages": 1000})
        assert run.wait(60).value == "completed", run.message
        late.subscribe(run)
        (snapshot,) = [f for f in late.outbox if f["type"] == "snapshot"]
        late.unsubscribe_all()

        events, total = snapshot["events"], run.summary()["events"]
        assert events == run.events() and events[-1]["seq"] == total
        assert len([e for e in events if e["kind"] not in KEPT_KINDS]) == 1000
        skipped = total - len(events)
        assert skipped > 0 and snapshot["skipped"] == skipped
        assert snapshot["notice"].startswith(
            f"showing {len(events):,} of {total:,} events: {skipped:,} older calls and output "
            "lines are kept only in the run's record"
        )

    run_with_manager_and_store(scenario, live_events=1000)


def test_a_recorded_run_replays_bounded_like_a_run_in_memory() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        settings = Settings(db=":memory:", live_events=1000)
        hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
        late = Viewer(hub, cast(WebSocket, NetworkSocket(stalled=False)))
        assert await replay(late, "old")
        (snapshot,) = [f for f in late.outbox if f["type"] == "snapshot"]
        events = snapshot["events"]
        assert [e["kind"] for e in events[:1]] == ["run"] and events[-1]["kind"] == "run"
        assert [e["seq"] for e in events[1:-1]] == list(range(502, 1502))
        assert snapshot["skipped"] == 500
        assert snapshot["notice"].startswith("showing 1,002 of 1,502 events: 500 older calls")

    record = [{"run": "old", "seq": 1, "kind": "run", "state": "running"}]
    record += [{"run": "old", "seq": s, "kind": "output", "text": f"{s}"} for s in range(2, 1502)]
    record += [{"run": "old", "seq": 1502, "kind": "run", "state": "completed"}]
    store = Store(":memory:")
    store.save_run({"id": "old", "started": 1.0, "state": "completed"})
    store.append_events(record)
    store.flush()
    run_with_manager_and_store(scenario, store=store)


def test_frames_are_compressed_only_when_the_setting_says_so(
    live_server: str, start_server: StartServer
) -> None:
    with viewer(live_server) as ws:  # the client offers permessage-deflate
        assert extensions_of(ws) == ""
    server = start_server({"PIPESCOPE_WS_COMPRESSION": "true"})
    with viewer(server.url) as ws:
        assert extensions_of(ws).startswith("permessage-deflate")
        assert receive(ws)["type"] == "hello"


def extensions_of(ws: ClientConnection) -> str:
    assert ws.response is not None
    return str(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
