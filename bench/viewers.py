"""Fifty viewers on one flood through a real server, one of them never reading."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import socket
import statistics
from multiprocessing.connection import Connection
from typing import Any

from bench.endtoend import writer_rate_of
from bench.rawviewer import Follower, client_frame, follow_all, handshake, subscribe
from bench.server import TERMINAL, serve


def many_viewers(messages: int, viewers: int = 50, pairs: int = 2) -> dict[str, Any]:
    """The flood writer's frames/s with `viewers` websocket viewers (one of them never
    reading) against the same flood with none, alternating, each on a fresh server.

    The reading viewers live in a process of their own, ask for compressed `events`
    frames as the page does, and parse nothing but the websocket frame headers until a
    `runs` frame announces the run's end (they inflate only the frames after it, to see
    the terminal event), so that what they cost the machine stays close to the kernel's
    copy of the bytes.
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
            settled = server.settle()
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
            "settled_s": round(settled, 2),
        }


def stalled_viewer(host: str, run_ids: list[str], compress: bool = True) -> socket.socket:
    """A websocket client of `host` ("address:port") that subscribes to the runs and then
    never reads a byte: its receive buffer is made small before it connects, so the
    server's sends to it block soon. `compress`: it asks for compressed frames, as the
    page does."""
    sock = handshake(host, rcvbuf=4096, compress=compress)
    for run_id in run_ids:
        subscribe(sock, run_id)
    return sock


def _readers_process(url: str, run_id: str, count: int, report: Connection) -> None:
    host = url.removeprefix("ws://").removesuffix("/ws")
    followers = [
        Follower(handshake(host), [f'"state":"{s}"'.encode() for s in TERMINAL], run_id)
        for _ in range(count)
    ]
    try:
        for follower in followers:
            subscribe(follower.sock, run_id)
        report.send("subscribed")
        follow_all(followers, idle_timeout=300)
    finally:
        for follower in followers:
            with contextlib.suppress(OSError):
                follower.sock.setblocking(True)
                follower.sock.sendall(client_frame(8, b"\x03\xe8"))
            follower.sock.close()
    report.send(
        {
            "ended": sum(f.ended for f in followers),
            "resynchronised": sum(f.snapshots > 1 for f in followers),
        }
    )
    report.close()
