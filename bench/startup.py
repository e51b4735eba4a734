"""Start latency through a real server: POST /api/runs to the run's first events."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from websockets.sync.client import ClientConnection

from bench.endtoend import viewer_connection
from bench.server import TERMINAL, Server, serve


def start_latency(methods: tuple[str, ...], repeats: int) -> dict[str, dict[str, Any]]:
    """POST /api/runs to the first events on the websocket, per start method (ms)."""
    out: dict[str, dict[str, Any]] = {}
    with serve() as server, viewer_connection(server) as conn:
        for method in methods:
            first_any: list[float] = []
            first_call: list[float] = []
            for _ in range(repeats):
                any_ms, call_ms = _one_start(server, conn, method)
                first_any.append(any_ms)
                first_call.append(call_ms)
            out[method] = {
                "first_event_ms": statistics.median(first_any),
                "first_call_ms": statistics.median(first_call),
                "first_call_ms_min": min(first_call),
                "first_call_ms_max": max(first_call),
                "repeats": repeats,
            }
    return out


def _one_start(server: Server, conn: ClientConnection, method: str) -> tuple[float, float]:
    began = time.monotonic_ns()
    run_id = server.start_run("ping-pong", {}, method)
    conn.send(json.dumps({"type": "subscribe", "run": run_id}))
    first_any = first_call = 0
    ended = False
    while not ended:
        frame = json.loads(conn.recv(timeout=60))
        arrived = time.monotonic_ns()
        if frame.get("type") not in ("snapshot", "events"):
            continue
        rid = frame["run"]["id"] if frame["type"] == "snapshot" else frame["run"]
        if rid != run_id:
            continue
        for event in frame["events"]:
            if event["pid"] != 0 and not first_any:
                first_any = arrived
            if event["kind"] == "call" and not first_call:
                first_call = arrived
            if event["kind"] == "run" and event["state"] in TERMINAL:
                ended = True
    conn.send(json.dumps({"type": "unsubscribe", "run": run_id}))
    return (first_any - began) / 1e6, (first_call - began) / 1e6
