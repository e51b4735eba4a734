"""Fifty viewers on one flood through a real server, one of them never reading."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import socket
import statistics
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed

from bench.endtoend import writer_rate_of
from bench.server import TERMINAL, serve


def many_viewers(messages: int, viewers: int = 50, pairs: int = 2) -> dict[str, Any]:
    """The flood writer's frames/s with `viewers` websocket viewers (one of them never
    reading) against the same flood with none, alternating, each on a fresh server.

    The reading viewers live in a process of their own and only look for the run's end
    in each frame's text, so that what they cost the machine stays small.
    """
    plan = [v for rep in range(pairs) for v in ((0, viewers) if rep % 2 == 0 else (viewers, 0))]
    runs: list[dict[str, Any]] = []
    for count in plan:
        runs.append(_watched_flood(messages, count))
        print(f"  viewers {json.dumps(runs[-1])}", flush=True)
    alone = [r["writer_frames_per_s"] for r in runs if r["viewers"] == 0]
    watched = [r for r in runs if r["viewers"]]
    ratios = [
        w["writer_frames_per_s"] / a
        for w, a in zip(watched, alone, strict=True)
        if a > 0 and w["writer_frames_per_s"] > 0
    ]
    return {
        "messages": messages,
        "viewers": viewers,
        "runs": runs,
        "worker_ratio": statistics.median(ratios) if ratios else None,
        "worker_ratio_min": min(ratios) if ratios else None,
        "worker_ratio_max": max(ratios) if ratios else None,
        "readers_to_the_end": min((w["readers_to_the_end"] for w in watched), default=0),
        "readers_resynchronised": max((w["readers_resynchronised"] for w in watched), default=0),
    }


def _watched_flood(messages: int, viewers: int) -> dict[str, Any]:
    with serve() as server:
        # Step mode holds the flood until every viewer has subscribed; both arms go this way.
        run_id = server.start_run("flood", {"messages": messages})
        server.request("POST", f"/api/runs/{run_id}/step-mode", {"on": True})
        stalled = stalled_viewer(server.url.removeprefix("http://"), [run_id]) if viewers else None
        mine, theirs = multiprocessing.Pipe()
        readers = multiprocessing.get_context("spawn").Process(
            target=_readers_process, args=(server.ws_url, run_id, max(0, viewers - 1), theirs)
        )
        readers.start()
        theirs.close()
        try:
            if not (mine.poll(120) and mine.recv() == "subscribed"):
                raise RuntimeError("expected the reading viewers to subscribe within 120 s")
            server.request("POST", f"/api/runs/{run_id}/step-mode", {"on": False})
            summary = server.wait_run(run_id, 900)
            report: dict[str, Any] = mine.recv() if mine.poll(300) else {}
        finally:
            readers.join(60)
            if readers.is_alive():
                readers.kill()
                readers.join()
            mine.close()
            if stalled is not None:
                stalled.close()
        return {
            "viewers": viewers,
            "state": summary["state"],
            "events_in_run": summary["events"],
            "writer_frames_per_s": writer_rate_of(server, run_id, summary["events"]),
            "readers_to_the_end": report.get("ended", 0),
            "readers_resynchronised": report.get("resynchronised", 0),
            "rss_peak_mib": server.peak_kib() / 1024,
        }


def stalled_viewer(host: str, run_ids: list[str]) -> socket.socket:
    """A websocket client of `host` ("address:port") that subscribes to the runs and then
    never reads a byte: its receive buffer is made small before it connects, so the
    server's sends to it block soon."""
    address, port = host.split(":")
    sock = socket.socket()
    sock.settimeout(10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: leave everything after the handshake unread
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"expected the websocket handshake to succeed, got {answer[:80]!r}")
    for run_id in run_ids:
        payload = json.dumps({"type": "subscribe", "run": run_id}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


def _readers_process(url: str, run_id: str, count: int, report: Connection) -> None:
    asyncio.run(_read_as_viewers(url, run_id, count, report))
    report.close()


async def _read_as_viewers(url: str, run_id: str, count: int, report: Connection) -> None:
    clients = [await aconnect(url, max_size=None, ping_interval=None) for _ in range(count)]
    try:
        for ws in clients:
            await ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        report.send("subscribed")
        results = await asyncio.gather(*(_follow_to_the_end(ws) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    report.send(
        {
            "ended": sum(ended for ended, _ in results),
            "resynchronised": sum(resynced for _, resynced in results),
        }
    )


async def _follow_to_the_end(ws: AsyncClientConnection) -> tuple[bool, bool]:
    snapshots = 0
    ends = [f'"state":"{s}"'.encode() for s in TERMINAL]
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), 300)
        except (TimeoutError, ConnectionClosed):
            return False, snapshots > 1
        # `events` frames are binary (UTF-8 JSON) and looked at as bytes, undecoded; the
        # rare text frames (hello, runs, snapshots) are encoded.
        data = message if isinstance(message, bytes) else message.encode()
        snapshots += data.startswith(b'{"type":"snapshot"')
        # The run's terminal state is the last event of the frame that ends it.
        end = data[-2000:]
        if b'"kind":"run"' in end and any(state in end for state in ends):
            return True, snapshots > 1
