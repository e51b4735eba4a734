"""The websocket /ws: one viewer's session, and the client frames it acts on (docs/protocol.md).

The run's shared stream is in `app.hub`, the viewer's outbox and sender in `app.viewer`.
"""

import asyncio
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api import VERSION
from app.frames import Event, Frame
from app.hub import LiveHub
from app.models import ClientFrame, FrameError, parse_client_frame
from app.viewer import MAX_OUTBOX, OVERFLOW_REASON, RESYNC_TAIL, Viewer
from pipecore.runs import NotControllable
from pipecore.scenarios.catalogue import shown

# Callers that knew the whole of /ws from this module still find its parts here.
__all__ = [
    "MAX_OUTBOX",
    "OVERFLOW_REASON",
    "RESYNC_TAIL",
    "LiveHub",
    "Viewer",
    "live",
    "replay",
    "router",
    "serve",
]

# Kept whole in a snapshot of a recorded run, as a run in memory keeps them.
STRUCTURE_KINDS = frozenset({"run", "pipe", "process", "attach", "verdict"})

router = APIRouter()
# What `/ws?compress=` may ask for: `events` frames as raw DEFLATE streams.
COMPRESSION = "deflate-raw"


async def serve(hub: LiveHub, websocket: WebSocket, compress: str | None = None) -> None:
    """Talk to one viewer until it leaves; `compress`: what it asked for (`?compress=`)."""
    viewer = Viewer(hub, websocket, compress=compress == COMPRESSION)
    hub.viewers.add(viewer)
    viewer.push({"type": "hello", "runs": hub.summaries(), "version": VERSION})
    if compress is not None and compress != COMPRESSION:
        refuse(viewer, f"compress: expected {COMPRESSION!r}, got {compress[:100]!r}")
    sender = asyncio.create_task(viewer.send_forever(), name="pipescope-viewer-sender")
    try:
        await receive_forever(viewer)
    finally:
        hub.viewers.discard(viewer)
        viewer.unsubscribe_all()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


class RateLimit:
    """At most `rate` messages a second, in bursts of as many (a token bucket). Of the
    messages past it, the first is answered with an error frame saying that they are
    ignored; the next message taken again is preceded by one saying how many were."""

    def __init__(self, viewer: Viewer, rate: int) -> None:
        self.viewer = viewer
        self.rate = rate
        self.tokens = float(rate)
        self.last = time.monotonic()
        self.ignored = 0  # since the last message taken

    def take(self) -> bool:
        """Whether the message just received may be acted on."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            if not self.ignored:
                refuse(
                    self.viewer,
                    f"rate limit: more than {self.rate:,} messages a second from this "
                    "connection; the ones past it are ignored",
                )
            self.ignored += 1
            return False
        self.tokens -= 1
        if self.ignored:
            refuse(self.viewer, f"rate limit: {self.ignored:,} messages were ignored")
            self.ignored = 0
        return True


async def receive_forever(viewer: Viewer) -> None:
    """Read the viewer's frames and act on each, until it leaves or is dropped."""
    max_bytes = viewer.hub.settings.max_message_bytes
    limit = RateLimit(viewer, viewer.hub.settings.max_frames_per_second)
    while not viewer.overflowed:
        try:
            message = await viewer.websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        if not limit.take():
            continue
        text = message.get("text")
        if text is None:
            refuse(viewer, "expected a text frame holding JSON, got a binary frame")
            continue
        try:
            frame = parse_client_frame(text, max_bytes)
        except FrameError as exc:
            refuse(viewer, str(exc), text)
            continue
        await act(viewer, frame)


async def act(viewer: Viewer, frame: ClientFrame) -> None:
    """Subscribe, unsubscribe, thin, step, switch step mode or stop, as the frame asks."""
    try:
        run = viewer.hub.manager.get(frame.run)
    except KeyError:
        if frame.type == "subscribe" and await replay(viewer, frame.run):
            return
        refuse(viewer, f"{frame.type}: unknown run {shown(frame.run)}")
        return
    if frame.type == "subscribe":
        viewer.subscribe(run)
        return
    if frame.type == "unsubscribe":
        viewer.unsubscribe(run.id)
        return
    if frame.type == "thin":
        if run.id not in viewer.subscriptions:
            refuse(viewer, f"thin: expected a run this connection subscribes to, got {run.id!r}")
        else:
            viewer.thin(run.id, frame.keep)
        return
    try:
        if frame.type == "step":
            run.step()
        elif frame.type == "step_mode":
            run.set_step_mode(frame.on)
        else:
            run.stop()  # returns at once; the run's `stopped` state event follows
    except NotControllable as exc:
        refuse(viewer, f"{frame.type}: {exc}")


async def replay(viewer: Viewer, run_id: str) -> bool:
    """Send the record of a run of an earlier server as a snapshot, if there is one."""
    store = viewer.hub.store
    summary = await asyncio.to_thread(store.run, run_id)
    if summary is None:
        return False
    summary.pop("analysis", None)
    events = await asyncio.to_thread(store.events, run_id)
    snapshot: Frame = {"type": "snapshot", "run": summary, "events": events}
    held = _bounded(events, viewer.hub.settings.live_events)
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
    viewer.push(snapshot)
    return True


def refuse(viewer: Viewer, message: str, received: str | None = None) -> None:
    """Answer a frame the server cannot act on with an `error` frame; the connection stays."""
    frame: Frame = {"type": "error", "message": message}
    if received is not None:
        frame["detail"] = received[:200]
    viewer.push(frame)


def _bounded(events: list[Event], others: int) -> list[Event]:
    """The events that draw the run's structure, and only the newest `others` of the rest."""
    rest = [i for i, e in enumerate(events) if e.get("kind") not in STRUCTURE_KINDS]
    if len(rest) <= others:
        return events
    dropped = set(rest[: len(rest) - others])
    return [e for i, e in enumerate(events) if i not in dropped]


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """The live stream (docs/protocol.md); Origin and token were checked by the AccessGuard."""
    await websocket.accept()
    hub: LiveHub = websocket.app.state.hub
    await serve(hub, websocket, websocket.query_params.get("compress"))
