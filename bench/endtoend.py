"""End to end through a real server: a flood watched by one viewer, or by none."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.sync.client import ClientConnection, connect

from bench.server import TERMINAL, Server, serve

EVENTS_PER_FRAME = 4  # send_bytes begin/end on the writer, recv_bytes begin/end on the reader
# The flood writer's line: the frames after its first (which may wait for a step) and
# how long they took.
WRITER_LINE = re.compile(r"after the first, (\d+) in ([\d.]+) s")
# Past this the run is stopped: the benchmark must not take the shared machine's memory.
RSS_CAP_KIB = 4 * 1024 * 1024


@dataclass
class Flood:
    """One flood run: what the workers managed and, with a viewer, what it received."""

    viewer: bool
    messages: int
    events_delivered: int = 0
    delivery_seconds: float = 0.0
    writer_frames_per_s: float = 0.0
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    resyncs: int = 0
    resync_events: int = 0
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_peak_kib: int = 0
    # the largest resident set sampled from the run's collector process (and the spare)
    collector_peak_kib: int = 0
    # (events published so far, server VmRSS KiB), sampled while the run goes
    rss_samples: list[tuple[int, int]] = field(default_factory=list)
    events_in_run: int = 0
    state: str = ""
    capped: bool = False
    verdicts: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ns)
        out: dict[str, Any] = {
            "viewer": self.viewer,
            "messages": self.messages,
            "events_in_run": self.events_in_run,
            "state": self.state,
            "stopped_at_rss_cap": self.capped,
            "verdicts": self.verdicts,
            "writer_frames_per_s": self.writer_frames_per_s,
            "writer_events_per_s": self.writer_frames_per_s * EVENTS_PER_FRAME,
            "rss_start_mib": self.rss_start_kib / 1024,
            "rss_end_mib": self.rss_end_kib / 1024,
            "rss_peak_mib": self.rss_peak_kib / 1024,
            "collector_rss_peak_mib": self.collector_peak_kib / 1024,
        }
        if self.rss_samples:
            # RSS once a tenth of the run's events were out: growth after it is what
            # the event count adds beyond the bounded record.
            tenth = max(self.events_in_run // 10, 1)
            early = next((kib for n, kib in self.rss_samples if n >= tenth), None)
            if early is not None:
                out["rss_at_tenth_mib"] = early / 1024
                out["rss_tenth_events"] = tenth
        if self.viewer:
            out["events_delivered"] = self.events_delivered
            out["delivered_per_s"] = self.events_delivered / max(self.delivery_seconds, 1e-9)
            out["resyncs"] = self.resyncs
            # Left out of resynchronising snapshots (bounded), so never shown live.
            out["events_not_delivered"] = self.events_in_run - self.events_delivered
            out["latency_samples"] = len(lat)
            out["events_first_seen_in_resync_snapshots"] = self.resync_events
            if lat:
                out["latency_p50_ms"] = lat[len(lat) // 2] / 1e6
                out["latency_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6
                out["latency_max_ms"] = lat[-1] / 1e6
        return out


def _writer_rate(text: str) -> float | None:
    match = WRITER_LINE.search(text)
    if match is None:
        return None
    return int(match.group(1)) / max(float(match.group(2)), 1e-9)


def viewer_connection(server: Server, compress: bool = False) -> ClientConnection:
    # No keepalive pings: a flooded server may not answer one in time, and that is measured
    # as latency, not treated as a dead connection.
    url = server.ws_url + ("?compress=deflate-raw" if compress else "")
    conn = connect(url, max_size=None, open_timeout=10, ping_interval=None)
    hello = json.loads(conn.recv(timeout=10))
    if hello.get("type") != "hello":
        raise RuntimeError(f"expected a hello frame first, got {hello.get('type')!r}")
    return conn


def flood(messages: int, viewer: bool, ws_compression: bool | None = None) -> Flood:
    """Run the flood scenario on a fresh server, with or without a subscribed viewer."""
    result = Flood(viewer, messages)
    with serve(ws_compression=ws_compression) as server:
        server.settle()  # the spares a new server starts are ready before the flood
        result.rss_start_kib = server.rss_kib()
        if viewer:
            # Compressed `events` frames, as the page asks for them.
            with viewer_connection(server, compress=True) as conn:
                run_id = server.start_run("flood", {"messages": messages})
                conn.send(json.dumps({"type": "subscribe", "run": run_id}))
                _watch(server, conn, run_id, result)
        else:
            run_id = server.start_run("flood", {"messages": messages})
            _poll(server, run_id, result)
        summary = server.wait_run(run_id, 900)
        result.state = summary["state"]
        result.events_in_run = summary["events"]
        verdicts = summary.get("verdicts")
        if isinstance(verdicts, list):
            result.verdicts = sorted({v["verdict"] for v in verdicts})
        result.rss_end_kib = server.rss_kib()
        result.rss_peak_kib = server.peak_kib()
        if not result.writer_frames_per_s:
            result.writer_frames_per_s = writer_rate_of(server, run_id, summary["events"])
    return result


def writer_rate_of(server: Server, run_id: str, events: int) -> float:
    """The frames/s the run's writer printed, from the end of its record."""
    rate = 0.0
    tail = server.request("GET", f"/api/runs/{run_id}/events?after={max(0, events - 20_000)}")
    for event in tail:
        if event["kind"] == "output":
            rate = _writer_rate(event.get("text", "")) or rate
    return rate


def _cap(server: Server, run_id: str, result: Flood) -> None:
    if not result.capped and server.rss_kib() > RSS_CAP_KIB:
        result.capped = True
        server.request("POST", f"/api/runs/{run_id}/stop")


def _poll(server: Server, run_id: str, result: Flood) -> None:
    while True:
        summary = server.request("GET", f"/api/runs/{run_id}")
        result.rss_samples.append((int(summary["events"]), server.rss_kib()))
        result.collector_peak_kib = max(result.collector_peak_kib, server.collector_rss_kib())
        if summary["state"] in TERMINAL:
            return
        _cap(server, run_id, result)
        time.sleep(0.2)


class _Arrivals:
    """Frames as they arrive, each with the time it was received: a thread only receives
    and stamps, so that the time spent parsing one frame does not count as the next
    frame's latency (the page, too, parses in a worker of its own)."""

    def __init__(self, conn: ClientConnection) -> None:
        self._frames: queue.SimpleQueue[tuple[int, str | bytes] | BaseException] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._receive, args=(conn,), daemon=True)
        self._thread.start()

    def _receive(self, conn: ClientConnection) -> None:
        try:
            while True:
                raw = conn.recv(timeout=120)
                self._frames.put((time.monotonic_ns(), raw))
        except BaseException as exc:  # closed, timed out: the reader raises it in turn
            self._frames.put(exc)

    def next(self) -> tuple[int, str | bytes]:
        item = self._frames.get(timeout=150)
        if isinstance(item, BaseException):
            raise item
        return item


def _announces_end(raw: str | bytes, run_id: str) -> bool:
    """Whether `raw` is a `runs` frame saying that `run_id` reached a terminal state."""
    if not isinstance(raw, str) or not raw.startswith('{"type":"runs"'):
        return False
    frame = orjson.loads(raw)
    return any(r.get("id") == run_id and r.get("state") in TERMINAL for r in frame["runs"])


def _watch(server: Server, conn: ClientConnection, run_id: str, result: Flood) -> None:
    """Follow the run to its end. Until a `runs` frame announces the end, frames are only
    received and stamped (by `_Arrivals`) and kept; they are inflated and parsed after it,
    in arrival order, as the fifty viewers' readers do (`bench.rawviewer`): while the
    flood runs, the viewer costs the machine its receiving only, as a browser on another
    machine would, and its parsing does not take the workers' CPUs."""
    arrivals = _Arrivals(conn)
    tally = _Tally(run_id, result)
    kept: list[tuple[int, str | bytes]] = []
    next_check = time.monotonic()
    while True:
        arrived, raw = arrivals.next()
        kept.append((arrived, raw))
        if _announces_end(raw, run_id):
            break
        if time.monotonic() > next_check:
            _cap(server, run_id, result)
            next_check = time.monotonic() + 0.5
    if not any(tally.take(arrived, raw) for arrived, raw in kept):
        while not tally.take(*arrivals.next()):
            pass
    result.delivery_seconds = (tally.last - tally.first) / 1e9


class _Tally:
    """What one viewer's frames delivered: distinct events, latencies and resyncs, and
    when the first and the last call arrived (`first`, `last`, ns)."""

    def __init__(self, run_id: str, result: Flood) -> None:
        self.run_id = run_id
        self.result = result
        self.last_seq = 0
        self.first = self.last = 0
        self.snapshots = 0

    def take(self, arrived: int, raw: str | bytes) -> bool:
        """Count the frame `raw` that arrived at `arrived` (ns); whether it ended the run."""
        result = self.result
        if isinstance(raw, bytes):  # an `events` frame, a raw DEFLATE stream
            raw = zlib.decompress(raw, -15)
        frame = orjson.loads(raw)  # a fast parser, as a browser has: measure the server
        kind = frame.get("type")
        if kind == "snapshot" and frame["run"]["id"] == self.run_id:
            # The first snapshot holds what happened before the subscription; a later one
            # resynchronises a viewer that fell behind, and its new events reach the
            # viewer only now: their latency counts. It brings only the newest calls.
            live = self.snapshots > 0
            self.snapshots += 1
            result.resyncs += live
        elif kind == "events" and frame["run"] == self.run_id:
            live = True
        else:
            return False
        ended = False
        latencies = result.latencies_ns
        for event in frame["events"]:
            if event["seq"] <= self.last_seq:
                continue  # resent by a resynchronising snapshot
            self.last_seq = event["seq"]
            result.events_delivered += 1
            ekind = event["kind"]
            if ekind == "call":
                self.first = self.first or arrived
                self.last = arrived
                if live:
                    latencies.append(arrived - event["t"])
                    result.resync_events += kind == "snapshot"
            elif ekind == "output":
                rate = _writer_rate(event["text"])
                result.writer_frames_per_s = rate or result.writer_frames_per_s
            elif ekind == "run" and event["state"] in TERMINAL:
                ended = True
        return ended
