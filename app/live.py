"""The websocket /ws: per-viewer subscriptions, batched event frames and resynchronisation."""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api import VERSION, all_summaries
from app.models import ClientFrame, FrameError, parse_client_frame
from app.settings import Settings
from app.store import Store
from pipecore.runs import BaseRun, NotControllable, RunManager

Event = dict[str, Any]
Batch = list[Event]
Frame = dict[str, Any]

TERMINAL_STATES = frozenset({"completed", "failed", "stopped", "timeout", "deadlock", "killed"})

router = APIRouter()
log = logging.getLogger("pipescope.live")


class LiveHub:
    """Every connected viewer, and a watch on every run for the `runs` broadcast."""

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
        self._watches: dict[str, Callable[[], None]] = {}

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

    def watch(self, run: BaseRun) -> None:
        """Broadcast `runs` now and whenever this run's state changes (call on the loop)."""
        if run.id not in self._watches:
            so_far, unsubscribe = run.subscribe(
                self.from_collector(partial(self._run_batch, run.id))
            )
            self._watches[run.id] = unsubscribe
            self._run_batch(run.id, so_far)
        self.broadcast_runs()

    def _run_batch(self, run_id: str, batch: Batch) -> None:
        states = [e.get("state") for e in batch if e.get("kind") == "run"]
        if not states:
            return
        self.broadcast_runs()
        if states[-1] in TERMINAL_STATES and run_id in self._watches:
            self._watches.pop(run_id)()

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
        for unsubscribe in self._watches.values():
            unsubscribe()
        self._watches.clear()
        for viewer in list(self.viewers):
            await viewer.close()


# Control frames (hello, runs, errors; at most one snapshot per run) one viewer may
# leave unread before it is dropped.
MAX_OUTBOX = 4096
OVERFLOW_REASON = f"dropped: more than {MAX_OUTBOX} frames waited unread for this viewer"


class Viewer:
    """One websocket connection: its subscriptions, its bounded backlog and its sender."""

    def __init__(self, hub: LiveHub, websocket: WebSocket) -> None:
        self.hub = hub
        self.websocket = websocket
        self.interval = 1.0 / hub.settings.viewer_fps
        self.limit = hub.settings.viewer_backlog
        # run id -> (subscription token, unsubscribe); the token drops batches that were
        # already on their way when a subscription was replaced.
        self.subscriptions: dict[str, tuple[object, Callable[[], None]]] = {}
        self.outbox: deque[Frame] = deque()
        self.pending: dict[str, Batch] = {}
        self.backlog = 0
        self.behind: set[str] = set()
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

    def subscribe(self, run: BaseRun, notice: str | None = None) -> None:
        self.unsubscribe(run.id)
        token = object()
        handler = self.hub.from_collector(partial(self._deliver, run.id, token))
        events, unsubscribe = run.subscribe(handler)
        self.subscriptions[run.id] = (token, unsubscribe)
        snapshot: Frame = {"type": "snapshot", "run": run.summary(), "events": events}
        if notice is not None:
            snapshot["notice"] = notice
        self.push(snapshot)

    def unsubscribe(self, run_id: str) -> None:
        entry = self.subscriptions.pop(run_id, None)
        if entry is not None:
            entry[1]()
        self.backlog -= len(self.pending.pop(run_id, []))
        self.behind.discard(run_id)

    def unsubscribe_all(self) -> None:
        for run_id in list(self.subscriptions):
            self.unsubscribe(run_id)

    def _deliver(self, run_id: str, token: object, batch: Batch) -> None:
        entry = self.subscriptions.get(run_id)
        if entry is None or entry[0] is not token or run_id in self.behind:
            return
        self.pending.setdefault(run_id, []).extend(batch)
        self.backlog += len(batch)
        if self.backlog > self.limit:
            # Too far behind: drop what waits and resend each run whole from a snapshot,
            # so holding this viewer's backlog never costs more than the limit.
            self.behind.update(self.pending)
            self.pending.clear()
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

    async def _send_forever(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.overflowed:
                await self.websocket.close(code=1008, reason=OVERFLOW_REASON)
                return
            while self.outbox:
                await self.websocket.send_json(self.outbox.popleft())
            for run_id in sorted(self.behind):
                self.behind.discard(run_id)
                self._resynchronise(run_id)
            while self.outbox:
                await self.websocket.send_json(self.outbox.popleft())
            if self.pending:
                batches, self.pending, self.backlog = self.pending, {}, 0
                for run_id, events in batches.items():
                    await self.websocket.send_json(
                        {"type": "events", "run": run_id, "events": events}
                    )
                # Coalesce: whatever arrives meanwhile goes out together in the next frame.
                await asyncio.sleep(self.interval)

    def _resynchronise(self, run_id: str) -> None:
        try:
            run = self.hub.manager.get(run_id)
        except KeyError:
            self.unsubscribe(run_id)
            return
        self.subscribe(
            run,
            notice=f"resynchronised: this view fell more than {self.limit} events behind",
        )

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
        self.push({"type": "snapshot", "run": summary, "events": events})
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
