"""The websocket /ws: per-viewer subscriptions, batched event frames and resynchronisation."""

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api import VERSION, all_summaries
from app.models import ClientFrame, FrameError, parse_client_frame
from app.settings import Settings
from app.store import Store
from pipecore.runs import BaseRun, NotControllable, RunManager

Event = dict[str, Any]
Batch = list[Event]
Frame = dict[str, Any]

# Kept whole in a snapshot of a recorded run, as a run in memory keeps them.
STRUCTURE_KINDS = frozenset({"run", "pipe", "process", "attach", "verdict"})
TERMINAL_STATES = frozenset({"completed", "failed", "stopped", "timeout", "deadlock", "killed"})

router = APIRouter()
log = logging.getLogger("pipescope.live")


class Channel:
    """One run's stream on the loop: each batch encoded once for every viewer of the run."""

    def __init__(self, unsubscribe: Callable[[], None]) -> None:
        self.unsubscribe = unsubscribe
        self.viewers: set[Viewer] = set()
        # Watched runs stay open until they end, for the `runs` broadcast.
        self.watched = False


class LiveHub:
    """Every connected viewer, and one channel per run that someone watches or views."""

    def __init__(
        self,
        manager: RunManager,
        store: Store,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        records: list[dict[str, Any]],
    ) -> None:
        self.manager = manager
        self.store = store
        # Runs of earlier servers, read once: `hello` and `runs` never wait for the disk.
        self.records = records
        self.settings = settings
        self.loop = loop
        self.viewers: set[Viewer] = set()
        self._channels: dict[str, Channel] = {}
        # run id -> the latest events frames built for it, with the parts they were built
        # from: viewers that keep up wait for the same parts, and share one frame.
        self._frames: dict[str, deque[tuple[list[bytes], str]]] = {}

    def from_collector(self, handler: Callable[[Batch], None]) -> Callable[[Batch], None]:
        """Wrap a loop-side handler as a subscriber the collector thread may call.

        This is the one place where anything crosses from a collector thread to the loop:
        the thread only schedules the handler; every piece of state is touched on the loop.
        """
        loop = self.loop

        def hand_to_loop(batch: Batch) -> None:
            # A loop already closed (server shut down) has no viewer left to show it to.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(handler, batch)

        return hand_to_loop

    def channel(self, run: BaseRun) -> Channel:
        """The run's channel, subscribed to the run before anyone takes a snapshot of it."""
        channel = self._channels.get(run.id)
        if channel is None:
            handler = self.from_collector(partial(self._dispatch, run.id))
            _, unsubscribe = run.subscribe(handler, tail=0)
            channel = self._channels[run.id] = Channel(unsubscribe)
        return channel

    def leave(self, run_id: str, viewer: "Viewer") -> None:
        channel = self._channels.get(run_id)
        if channel is None:
            return
        channel.viewers.discard(viewer)
        if not channel.viewers and not channel.watched:
            self._close_channel(run_id)

    def events_frame(self, run_id: str, parts: list[bytes]) -> str:
        """The `events` frame of these encoded parts (built once for every viewer)."""
        built = self._frames.setdefault(run_id, deque(maxlen=FRAMES_SHARED))
        for used, frame in built:
            if _same_parts(used, parts):
                return frame
        frame = b"".join(
            (
                b'{"type":"events","run":',
                orjson.dumps(run_id),
                b',"events":[',
                b",".join(parts),
                b"]}",
            )
        ).decode()
        built.append((parts, frame))
        return frame

    def _close_channel(self, run_id: str) -> None:
        self._frames.pop(run_id, None)
        channel = self._channels.pop(run_id, None)
        if channel is not None:
            channel.unsubscribe()

    def watch(self, run: BaseRun) -> None:
        """Broadcast `runs` now and whenever this run's state changes (call on the loop)."""
        if not run.state.terminal:
            self.channel(run).watched = True
        self.broadcast_runs()

    def _dispatch(self, run_id: str, batch: Batch) -> None:
        channel = self._channels.get(run_id)
        if channel is None or not batch:
            return
        if channel.viewers:
            # The events as JSON, without the list's brackets: a viewer's frame joins the
            # parts that waited for it with commas. A large batch (a collector catching up)
            # is cut in pieces, so that no frame has to be much larger than MAX_FRAME_BYTES.
            for start in range(0, len(batch), PART_EVENTS):
                piece = batch[start : start + PART_EVENTS]
                part = orjson.dumps(piece)[1:-1]
                first, last = piece[0]["seq"], piece[-1]["seq"]
                for viewer in channel.viewers:
                    viewer.deliver(run_id, piece, part, first, last)
        states = [e.get("state") for e in batch if e.get("kind") == "run"]
        if not states:
            return
        self.broadcast_runs()
        if states[-1] in TERMINAL_STATES:
            # Nothing follows a run's terminal state; viewers keep what they were sent.
            self._close_channel(run_id)

    def summaries(self) -> list[dict[str, Any]]:
        return all_summaries(self.manager, self.records)

    def broadcast_runs(self) -> None:
        frame = {"type": "runs", "runs": self.summaries()}
        for viewer in self.viewers:
            viewer.push(frame)

    async def serve(self, websocket: WebSocket) -> None:
        """Talk to one viewer until it leaves."""
        viewer = Viewer(self, websocket)
        self.viewers.add(viewer)
        viewer.push({"type": "hello", "runs": self.summaries(), "version": VERSION})
        sender = asyncio.create_task(viewer.send_forever(), name="pipescope-viewer-sender")
        try:
            await viewer.receive_forever()
        finally:
            self.viewers.discard(viewer)
            viewer.unsubscribe_all()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def close(self) -> None:
        for run_id in list(self._channels):
            self._close_channel(run_id)
        for viewer in list(self.viewers):
            await viewer.close()


def _bounded(events: Batch, others: int) -> Batch:
    """The events that draw the run's structure, and only the newest `others` of the rest."""
    rest = [i for i, e in enumerate(events) if e.get("kind") not in STRUCTURE_KINDS]
    if len(rest) <= others:
        return events
    dropped = set(rest[: len(rest) - others])
    return [e for i, e in enumerate(events) if i not in dropped]


def _frame_groups(parts: list[bytes]) -> Iterator[list[bytes]]:
    """The parts in groups of about MAX_FRAME_BYTES: while a frame waits in a slow
    viewer's socket buffer, the server holds one frame of it, not the whole backlog."""
    group: list[bytes] = []
    size = 0
    for part in parts:
        group.append(part)
        size += len(part)
        if size >= MAX_FRAME_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _same_parts(one: list[bytes], other: list[bytes]) -> bool:
    return len(one) == len(other) and all(a is b for a, b in zip(one, other, strict=True))


def encode(frame: Frame) -> str:
    """A frame's JSON text (orjson; the standard library for what orjson refuses)."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:  # an integer past 64 bits, a non-string key
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


# Control frames (hello, runs, errors; at most one snapshot per run) one viewer may
# leave unread before it is dropped.
MAX_OUTBOX = 4096
OVERFLOW_REASON = f"dropped: more than {MAX_OUTBOX} frames waited unread for this viewer"
# Calls and output lines a resynchronising snapshot brings (with every run, pipe, process,
# attach and verdict event): its cost stays the same however long the run has gone on.
RESYNC_TAIL = 2000
# An `events` frame holds batches up to about this size; a batch is encoded in pieces
# of at most PART_EVENTS events (a few hundred bytes each).
MAX_FRAME_BYTES = 1 << 20
PART_EVENTS = 1000
# Frames kept per run for viewers that are a frame or two apart.
FRAMES_SHARED = 4


def _ignore(batch: Batch) -> None:
    pass


def snapshot_of(run: BaseRun, tail: int | None = None) -> tuple[Batch, int]:
    """The run's kept events (only the last `tail` calls and output lines, when given) and
    the number of events the run has published so far."""
    events, unsubscribe = run.subscribe(_ignore, tail=tail)
    unsubscribe()
    # seq counts every event published: the newest one, always kept, says how many.
    return events, int(events[-1]["seq"]) if events else 0


class Viewer:
    """One websocket connection: its subscriptions, its bounded backlog and its sender."""

    def __init__(self, hub: LiveHub, websocket: WebSocket) -> None:
        self.hub = hub
        self.websocket = websocket
        self.interval = 1.0 / hub.settings.viewer_fps
        self.limit = hub.settings.viewer_backlog
        # run id -> the last seq this viewer holds: batches of the run's channel that were
        # already on their way when it subscribed (or resubscribed) carry no newer event.
        self.subscriptions: dict[str, int] = {}
        self.outbox: deque[Frame] = deque()
        # run id -> encoded parts of the events waiting to be sent, and how many they are
        self.pending: dict[str, list[bytes]] = {}
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
        self.unsubscribe(run.id)
        self.hub.channel(run).viewers.add(self)
        events, total = snapshot_of(run, None if behind is None else RESYNC_TAIL)
        self.subscriptions[run.id] = total
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
        self.push(snapshot)

    def unsubscribe(self, run_id: str) -> None:
        if self.subscriptions.pop(run_id, None) is not None:
            self.hub.leave(run_id, self)
        self.pending.pop(run_id, None)
        self.backlog -= self.waiting.pop(run_id, 0)
        self.behind.discard(run_id)

    def unsubscribe_all(self) -> None:
        for run_id in list(self.subscriptions):
            self.unsubscribe(run_id)

    def deliver(self, run_id: str, batch: Batch, part: bytes, first: int, last: int) -> None:
        """Take a batch of the run's channel: `part` is its events' encoding."""
        since = self.subscriptions.get(run_id)
        if since is None or last <= since or run_id in self.behind:
            return
        if first <= since:
            # Partly in this viewer's snapshot already (it subscribed while the batch was
            # on its way to the loop): only the newer events.
            batch = [e for e in batch if e["seq"] > since]
            part = orjson.dumps(batch)[1:-1]
        self.subscriptions[run_id] = last
        self.pending.setdefault(run_id, []).append(part)
        self.waiting[run_id] = self.waiting.get(run_id, 0) + len(batch)
        self.backlog += len(batch)
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
            pass  # the viewer left; receive_forever sees it too and cleans up
        except Exception:
            log.exception("viewer sender failed; closing its connection")
            await self.close()

    async def _send(self, text: str) -> None:
        self.sending = True
        try:
            await self.websocket.send_text(text)
        finally:
            self.sending = False

    async def _send_outbox(self) -> None:
        while self.outbox:
            await self._send(encode(self.outbox.popleft()))

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
                batches, self.pending, self.backlog = self.pending, {}, 0
                self.waiting.clear()
                for run_id, parts in batches.items():
                    for group in _frame_groups(parts):
                        await self._send(self.hub.events_frame(run_id, group))
                # Coalesce: whatever arrives meanwhile goes out together in the next frame.
                await asyncio.sleep(self.interval)

    def _resynchronise(self, run_id: str) -> None:
        try:
            run = self.hub.manager.get(run_id)
        except KeyError:
            self.unsubscribe(run_id)
            return
        self.subscribe(run, behind=self.limit)

    async def receive_forever(self) -> None:
        max_bytes = self.hub.settings.max_message_bytes
        while not self.overflowed:
            try:
                message = await self.websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._refuse("expected a text frame holding JSON, got a binary frame")
                continue
            try:
                frame = parse_client_frame(text, max_bytes)
            except FrameError as exc:
                self._refuse(str(exc), text)
                continue
            await self._act(frame)

    async def _act(self, frame: ClientFrame) -> None:
        try:
            run = self.hub.manager.get(frame.run)
        except KeyError:
            if frame.type == "subscribe" and await self._replay(frame.run):
                return
            self._refuse(f"{frame.type}: unknown run {frame.run!r}")
            return
        if frame.type == "subscribe":
            self.subscribe(run)
            return
        if frame.type == "unsubscribe":
            self.unsubscribe(run.id)
            return
        try:
            if frame.type == "step":
                run.step()
            elif frame.type == "step_mode":
                run.set_step_mode(frame.on)
            else:
                run.stop()  # returns at once; the run's `stopped` state event follows
        except NotControllable as exc:
            self._refuse(f"{frame.type}: {exc}")

    async def _replay(self, run_id: str) -> bool:
        """Send the record of a run of an earlier server as a snapshot, if there is one."""
        store = self.hub.store
        summary = await asyncio.to_thread(store.run, run_id)
        if summary is None:
            return False
        summary.pop("analysis", None)
        events = await asyncio.to_thread(store.events, run_id)
        snapshot: Frame = {"type": "snapshot", "run": summary, "events": events}
        held = _bounded(events, self.hub.settings.live_events)
        if len(held) < len(events):
            # As a run in memory would: its structure, and only the newest calls and lines.
            skipped = len(events) - len(held)
            snapshot["events"] = held
            snapshot["skipped"] = skipped
            snapshot["notice"] = (
                f"showing {len(held):,} of {len(events):,} events: {skipped:,} older calls "
                "and output lines are kept only in the run's record (export, "
                "/api/runs/ID/events)"
            )
        self.push(snapshot)
        return True

    def _refuse(self, message: str, received: str | None = None) -> None:
        frame: Frame = {"type": "error", "message": message}
        if received is not None:
            frame["detail"] = received[:200]
        self.push(frame)

    async def close(self) -> None:
        self.unsubscribe_all()
        with contextlib.suppress(RuntimeError):  # already closed by the other side
            await self.websocket.close(code=1001, reason="server shutting down")


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """The live stream (docs/protocol.md); Origin and token were checked by the AccessGuard."""
    await websocket.accept()
    hub: LiveHub = websocket.app.state.hub
    await hub.serve(websocket)
