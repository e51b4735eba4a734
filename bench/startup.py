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
    """POST /api/runs to the first events on the websocket, per start method (ms); and
    under "blocked_begin", how soon the `begin` of a call that blocks reaches a viewer."""
    out: dict[str, dict[str, Any]] = {}
    with serve() as server, viewer_connection(server) as conn:
        late = [ms for _ in range(repeats) for ms in _blocked_begins(server, conn)]
        out["blocked_begin"] = {
            "median_ms": statistics.median(late),
            "max_ms": max(late),
            "begins": len(late),
        }
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


def _blocked_begins(server: Server, conn: ClientConnection) -> list[float]:
    """A `deadlock` run (recv-recv): both workers block in recv for good. How long after
    each `begin` (stamped in the worker) it reached this viewer (ms): the issue asks that
    the collector see it within 100 ms; a viewer sees it later still."""
    run_id = server.start_run("deadlock", {"variant": "recv-recv"}, "forkserver")
    conn.send(json.dumps({"type": "subscribe", "run": run_id}))
    late: list[float] = []
    ended = False
    while not ended:
        frame = json.loads(conn.recv(timeout=60))
        arrived = time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process
        if frame.get("type") not in ("snapshot", "events"):
            continue
        if (frame["run"]["id"] if frame["type"] == "snapshot" else frame["run"]) != run_id:
            continue
        for event in frame["events"]:
            blocked = event.get("phase") == "begin" and event.get("op") == "recv"
            if blocked and frame["type"] == "events":  # a snapshot's were seen before
                late.append((arrived - event["t"]) / 1e6)
            if event["kind"] == "run" and event["state"] in TERMINAL:
                ended = True
    conn.send(json.dumps({"type": "unsubscribe", "run": run_id}))
    return late


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
