"""Load: fifty viewers on one flood run with one that never reads; the concurrent-run cap."""

import asyncio
import json
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from app.live import LiveHub
from app.main import create_app
from app.settings import Settings
from bench.viewers import stalled_viewer
from tests.conftest import StartServer
from tests.reliability.conftest import TERMINAL, Leaks, figure, wait_for

Frame = dict[str, Any]
VIEWERS = 50
BACKLOG = 2500
LATE_FIELDS = {"match", "latency_ns", "corrupt"}
FLOOD = {
    "scenario": "custom",
    "params": {"topology": "pair", "writers": 2, "rate": 100, "count": 500, "size": 16},
    "step_mode": True,
}


FILLER = {"topology": "pair", "writers": 4, "rate": 0, "count": 1000, "size": 16}


@contextmanager
def server_in_thread(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The real app under uvicorn on a free loopback port, in a thread of this process,
    so the test can look at each viewer's backlog while it runs."""
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn started")
        yield f"127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def hold(frames: list[Frame], run_id: str) -> list[Frame]:
    """What a page holds: the last snapshot of the run and the events after it."""
    events: list[Frame] = []
    for frame in frames:
        if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
            events = list(frame["events"])
        elif frame["type"] == "events" and frame["run"] == run_id:
            events += frame["events"]
    return [{k: v for k, v in e.items() if k not in LATE_FIELDS} for e in events]


def ended(frames: list[Frame], run_id: str) -> bool:
    events = hold(frames, run_id)
    return bool(events) and events[-1].get("kind") == "run" and events[-1]["state"] in TERMINAL


def run_ended(frame: Frame, run_id: str) -> bool:
    """Whether this frame carries the run's terminal state (always its last event)."""
    if frame["type"] not in ("events", "snapshot") or not frame["events"]:
        return False
    if (frame["run"] if frame["type"] == "events" else frame["run"]["id"]) != run_id:
        return False
    last = frame["events"][-1]
    return bool(last.get("kind") == "run" and last.get("state") in TERMINAL)


async def follow(ws: ClientConnection, run_id: str) -> tuple[list[str], float]:
    """Read until the run's terminal state; the frames' texts and when the last came."""
    texts: list[str] = []
    while True:
        message = await asyncio.wait_for(ws.recv(), 120)
        # `events` frames come as binary messages of UTF-8 JSON, the rest as text.
        text = message.decode() if isinstance(message, bytes) else message
        texts.append(text)
        if '"state"' in text and run_ended(json.loads(text), run_id):
            return texts, time.monotonic()


async def read_as_viewers(host: str, run_id: str, count: int, report: Connection) -> None:
    clients = [
        await connect(f"ws://{host}/ws", max_size=None, open_timeout=30) for _ in range(count)
    ]
    try:
        for ws in clients:
            await ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        report.send("subscribed")
        started = time.monotonic()
        results = await asyncio.gather(*(follow(ws, run_id) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    stored = httpx.get(f"http://{host}/api/runs/{run_id}/events", timeout=30).json()
    expected = [{k: v for k, v in e.items() if k not in LATE_FIELDS} for e in stored]
    frames = [[json.loads(text) for text in texts] for texts, _ in results]
    report.send(
        {
            "complete": sum(hold(got, run_id) == expected for got in frames),
            "resynchronised": sum(any("notice" in f for f in got) for got in frames),
            "events": len(stored),
            "seconds": max(when for _, when in results) - started,
        }
    )


def viewers_process(host: str, run_id: str, count: int, report: Connection) -> None:
    """The reading viewers, in their own process: they must not slow the server's thread."""
    asyncio.run(read_as_viewers(host, run_id, count, report))
    report.close()


def test_fifty_viewers_on_a_flood_run_while_one_never_reads() -> None:
    settings = Settings(db=":memory:", viewer_backlog=BACKLOG)
    with server_in_thread(settings):
        pass  # the first server in a process opens a pipe that lives as long as the process
    resource_tracker.ensure_running()  # the spawn context's helper, kept for the session
    leaks = Leaks()
    with server_in_thread(settings) as (host, app):
        base = f"http://{host}"
        hub: LiveHub = app.state.hub
        # The stalled viewer first asks for a big finished run: its snapshot (megabytes of
        # plain JSON: it does not ask for compressed frames) fills the socket buffers, so
        # the server really cannot send to it any more; and what it is sent when it reads
        # again can be searched for the resynchronising snapshot's notice.
        filler = hub.manager.start("custom", FILLER)
        assert filler.wait(60).value == "completed", filler.message
        run_id = httpx.post(f"{base}/api/runs", json=FLOOD, timeout=30).json()["id"]
        stalled = stalled_viewer(host, [filler.id, run_id], compress=False)
        wait_for(lambda: any(len(v.subscriptions) == 2 for v in hub.viewers), 30, "subscribed")
        (stalled_side,) = list(hub.viewers)
        mine, theirs = multiprocessing.Pipe()
        readers = multiprocessing.get_context("spawn").Process(
            target=viewers_process, args=(host, run_id, VIEWERS - 1, theirs)
        )
        readers.start()
        theirs.close()
        try:
            assert mine.poll(60) and mine.recv() == "subscribed"
            wait_for(
                lambda: sum(bool(v.subscriptions) for v in hub.viewers) == VIEWERS,
                30,
                "every viewer subscribed",
            )
            httpx.post(f"{base}/api/runs/{run_id}/step-mode", json={"on": False}, timeout=30)
            largest = 0
            while not mine.poll(0.005):
                # What the server holds for the viewer that does not read.
                largest = max(largest, stalled_side.backlog)
                assert readers.is_alive() or mine.poll(), "the reading viewers failed"
            result = mine.recv()
        finally:
            readers.join(60)
            readers.close()
            mine.close()
        assert result["complete"] == VIEWERS - 1, result
        assert result["resynchronised"] == 0, result
        assert largest <= BACKLOG

        # Now the stalled viewer reads: it is resynchronised from a snapshot saying why.
        stalled.settimeout(30)
        received = b""
        marker = f"fell more than {BACKLOG:,} events behind".encode()
        deadline = time.monotonic() + 60
        while marker not in received:
            assert time.monotonic() < deadline, "the stalled viewer was never resynchronised"
            chunk = stalled.recv(1 << 20)
            assert chunk, f"the server closed the stalled viewer, last: {received[-300:]!r}"
            received = received[-len(marker) :] + chunk
        stalled.close()
        wait_for(lambda: len(hub.viewers) == 0, 30, "every viewer gone")
    figure(
        "viewers held",
        f"{VIEWERS - 1} of {VIEWERS} viewers held all {result['events']} events of the flood "
        f"run in {result['seconds']:.1f} s, 0 resynchronised; the stalled one peaked at "
        f"{largest} events held for it (limit {BACKLOG}) and was resynchronised",
    )
    leaks.check([filler, hub.manager.get(run_id)])


def test_runs_up_to_the_cap_then_429_naming_the_cap(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_MAX_RUNS": "3"})
    url = f"{server.url}/api/runs"
    ids = []
    for _ in range(3):
        response = httpx.post(url, json={"scenario": "ping-pong", "step_mode": True}, timeout=30)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for scenario in ("ping-pong", "custom"):
        refused = httpx.post(url, json={"scenario": scenario}, timeout=30)
        assert refused.status_code == 429
        assert refused.json() == {
            "detail": "concurrent runs: at most 3 may run at once, 3 are running"
        }
    listed = httpx.get(url, timeout=30).json()
    assert sorted(r["id"] for r in listed if r["state"] == "running") == sorted(ids)
    httpx.post(f"{url}/{ids[0]}/stop", timeout=30)
    wait_for(
        lambda: httpx.get(f"{url}/{ids[0]}", timeout=30).json()["state"] == "stopped",
        30,
        "the stopped run ended",
    )
    again = httpx.post(url, json={"scenario": "ping-pong"}, timeout=30)
    assert again.status_code == 201, again.text
