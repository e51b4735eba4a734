"""A websockets client of /ws for tests: connect, receive frames, follow a run to its end."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

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


def extensions_of(ws: ClientConnection) -> str:
    assert ws.response is not None
    return str(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
