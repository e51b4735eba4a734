"""One viewer's connection: its subscriptions, its bounded outbox and the task that sends."""

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from functools import partial

import orjson
from fastapi import WebSocket, WebSocketDisconnect

from app.frames import Event, Frame, SharedFrame, Slice
from app.hub import LiveHub
from pipecore.parts import deflated_whole, part_of
from pipecore.runs import BaseRun

log = logging.getLogger("pipescope.live")

# Control frames (hello, runs, errors; at most one snapshot per run) one viewer may
# leave unread before it is dropped.
MAX_OUTBOX = 4096
OVERFLOW_REASON = f"dropped: more than {MAX_OUTBOX} frames waited unread for this viewer"
# Calls and output lines a resynchronising snapshot brings (with every run, pipe, process,
# attach and verdict event): its cost stays the same however long the run has gone on.
RESYNC_TAIL = 2000


def encode(frame: Frame) -> str:
    """A frame's JSON text (orjson; the standard library for what orjson refuses)."""
    if isinstance(frame, SharedFrame):
        if frame.text is None:
            frame.text = encode(dict(frame))
        return frame.text
    return _json(frame).decode()


def _json(frame: Frame) -> bytes:
    """A frame's UTF-8 JSON (orjson; the standard library for what orjson refuses)."""
    try:
        return orjson.dumps(frame)
    except TypeError:  # an integer past 64 bits, a non-string key
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()


def sent(frame: Frame, compress: bool) -> str | bytes:
    """What a viewer is sent for a control frame: its JSON text; a `snapshot`, which may
    hold a long run's kept events, as the raw DEFLATE stream of that JSON in a binary
    message when the viewer asked for compressed frames (docs/protocol.md). The JSON to
    compress is orjson's bytes as they come, never decoded to text and encoded back."""
    if not compress or frame["type"] != "snapshot":
        return encode(frame)
    if not isinstance(frame, SharedFrame):
        return deflated_whole(_json(frame))
    if frame.deflated is None:
        whole = _json(dict(frame)) if frame.text is None else frame.text.encode()
        frame.deflated = deflated_whole(whole)
    return frame.deflated


def _ignore(batch: list[Event]) -> None:
    pass


def snapshot_of(run: BaseRun, tail: int | None = None) -> tuple[list[Event], int]:
    """The run's kept events (only the last `tail` calls and output lines, when given) and
    the number of events the run has published so far."""
    events, unsubscribe = run.subscribe(_ignore, tail=tail)
    unsubscribe()
    # seq counts every event published: the newest one, always kept, says how many.
    return events, int(events[-1]["seq"]) if events else 0


def snapshot_frame(run: BaseRun, behind: int | None) -> tuple[Frame, int]:
    """The `snapshot` frame of the run and how many events it has published; `behind`: for a
    viewer that fell more than this many events behind (only the last RESYNC_TAIL calls
    and output lines, and a notice saying so)."""
    events, total = snapshot_of(run, None if behind is None else RESYNC_TAIL)
    snapshot: Frame = {"type": "snapshot", "run": run.summary(), "events": events}
    skipped = total - len(events)
    if behind is not None:
        snapshot["notice"] = (
            f"fell more than {behind:,} events behind: showing {len(events):,} of "
            f"{total:,} events, {skipped:,} older calls and output lines skipped"
        )
    elif skipped > 0:
        snapshot["notice"] = (
            f"showing {len(events):,} of {total:,} events: {skipped:,} older calls and "
            "output lines are kept only in the run's record (export, /api/runs/ID/events)"
        )
    if skipped > 0:
        snapshot["skipped"] = skipped
    return snapshot, total


class Viewer:
    """One websocket connection: its subscriptions, its bounded backlog and its sender."""

    def __init__(self, hub: LiveHub, websocket: WebSocket, compress: bool = False) -> None:
        self.hub = hub
        self.websocket = websocket
        # `events` frames go out as raw DEFLATE streams (/ws?compress=deflate-raw).
        self.compress = compress
        self.interval = 1.0 / hub.settings.viewer_fps
        self.limit = hub.settings.viewer_backlog
        # run id -> the last seq this viewer holds: batches of the run's channel that were
        # already on their way when it subscribed (or resubscribed) carry no newer event.
        self.subscriptions: dict[str, int] = {}
        self.outbox: deque[Frame] = deque()
        # run id -> slices of the events waiting to be sent, and how many they are
        self.pending: dict[str, list[Slice]] = {}
        # run id -> `keep` of the runs whose batches this viewer asked to thin
        self.thinned: dict[str, int] = {}
        self.waiting: dict[str, int] = {}
        self.backlog = 0
        self.behind: set[str] = set()
        # Whether a frame is on its way out: events that pile up meanwhile are the backlog of
        # a slow viewer; those that come in one large batch to an idle sender are not.
        self.sending = False
        self.wake = asyncio.Event()
        self.overflowed = False

    def push(self, frame: Frame) -> None:
        """Queue a control frame (hello, runs, snapshot, error); sent before pending events.

        A viewer that lets MAX_OUTBOX control frames pile up is not reading: it is
        dropped with a reason rather than allowed to grow the server's memory.
        """
        if self.overflowed:
            return
        if frame["type"] == "snapshot":
            # an unsent snapshot of the same run is stale: the new one replaces it, so a
            # viewer that keeps subscribing without reading holds one snapshot per run
            run_id = frame["run"]["id"]
            stale = [f for f in self.outbox if f["type"] == "snapshot" and f["run"]["id"] == run_id]
            for old in stale:
                self.outbox.remove(old)
        if len(self.outbox) >= MAX_OUTBOX:
            self.overflowed = True
            self.outbox.clear()
            self.unsubscribe_all()
        else:
            self.outbox.append(frame)
        self.wake.set()

    def subscribe(self, run: BaseRun, behind: int | None = None) -> None:
        """Send a snapshot of the run, then its new events as they come.

        `behind`: the viewer fell more than this many events behind, so the snapshot
        holds only the last RESYNC_TAIL calls and output lines and says so.
        """
        keep = self.thinned.get(run.id)
        self.unsubscribe(run.id)
        if keep is not None:  # a resynchronised viewer still wants what it asked for
            self.thinned[run.id] = keep
        channel = self.hub.channel(run)
        channel.viewers.add(self)
        if behind is None:
            snapshot, total = snapshot_frame(run, None)
        else:
            # Viewers that fall behind together share one snapshot (and its encoding).
            snapshot, total = channel.shared_snapshot(partial(snapshot_frame, run, behind))
        self.subscriptions[run.id] = total
        self.push(snapshot)

    def unsubscribe(self, run_id: str) -> None:
        if self.subscriptions.pop(run_id, None) is not None:
            self.hub.leave(run_id, self)
        self.pending.pop(run_id, None)
        self.thinned.pop(run_id, None)
        self.backlog -= self.waiting.pop(run_id, 0)
        self.behind.discard(run_id)

    def unsubscribe_all(self) -> None:
        for run_id in list(self.subscriptions):
            self.unsubscribe(run_id)

    def thin(self, run_id: str, keep: int | None) -> None:
        """Send this run's batches thinned (its structure, closes and errors, and the
        latest `keep` output lines and other calls of each), or, with None, whole again
        (docs/protocol.md, `thin`)."""
        if keep is None:
            self.thinned.pop(run_id, None)
        elif run_id in self.subscriptions:
            self.thinned[run_id] = keep

    def deliver(self, run_id: str, piece: Slice) -> None:
        """Take a slice of the run's channel (its frame is built once for every viewer)."""
        since = self.subscriptions.get(run_id)
        if since is None or piece.last <= since or run_id in self.behind:
            return
        if piece.first <= since:
            # Partly in this viewer's snapshot already (it subscribed while the slice was
            # being cut): only the newer events, in a slice of its own.
            parts = [part for part in piece.parts if part.last > since]
            if parts[0].first <= since:
                parts[0] = part_of([e for e in parts[0].events() if e["seq"] > since])
            piece = Slice(run_id, parts)
        self.subscriptions[run_id] = piece.last
        self.pending.setdefault(run_id, []).append(piece)
        self.waiting[run_id] = self.waiting.get(run_id, 0) + piece.count
        self.backlog += piece.count
        if self.backlog > self.limit and self.sending:
            # Too far behind: drop what waits and resend each run from a bounded snapshot,
            # so holding this viewer's backlog never costs more than the limit.
            self.behind.update(self.pending)
            self.pending.clear()
            self.waiting.clear()
            self.backlog = 0
        self.wake.set()

    async def send_forever(self) -> None:
        try:
            await self._send_forever()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the viewer left; app.live.receive_forever sees it too and cleans up
        except Exception:
            log.exception("viewer sender failed; closing its connection")
            await self.close()

    async def _send(self, frame: str | bytes) -> None:
        """Send a frame: text as a text message, bytes (an `events` frame's UTF-8 JSON, or
        a compressed frame) as a binary one."""
        self.sending = True
        try:
            if isinstance(frame, bytes):
                await self.websocket.send_bytes(frame)
            else:
                await self.websocket.send_text(frame)
        finally:
            self.sending = False

    async def _send_outbox(self) -> None:
        while self.outbox:
            await self._send(sent(self.outbox.popleft(), self.compress))

    async def _send_forever(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.overflowed:
                await self.websocket.close(code=1008, reason=OVERFLOW_REASON)
                return
            await self._send_outbox()
            for run_id in sorted(self.behind):
                self.behind.discard(run_id)
                self._resynchronise(run_id)
            await self._send_outbox()
            if self.pending:
                started = time.monotonic()
                batches, self.pending, self.backlog = self.pending, {}, 0
                self.waiting.clear()
                for run_id, slices in batches.items():
                    keep = self.thinned.get(run_id)
                    if keep is not None:
                        parts = [part for piece in slices for part in piece.parts]
                        frame = self.hub.thinned_frame(run_id, parts, keep, self.compress)
                        await self._send(frame)
                        continue
                    for piece in slices:
                        await self._send(piece.sent(self.compress))
                if self.thinned:
                    # The hub paces slices; thinned ones are joined by the viewer, so it
                    # coalesces: whatever arrives meanwhile goes out together in the next
                    # frame, `interval` after this one started.
                    await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    def _resynchronise(self, run_id: str) -> None:
        try:
            run = self.hub.manager.get(run_id)
        except KeyError:
            self.unsubscribe(run_id)
            return
        self.subscribe(run, behind=self.limit)

    async def close(self) -> None:
        self.unsubscribe_all()
        with contextlib.suppress(RuntimeError):  # already closed by the other side
            await self.websocket.close(code=1001, reason="server shutting down")
