"""One shared stream per run: subscribed once, each slice of it encoded once for all its viewers."""

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from app.api import all_summaries
from app.frames import Frame, FrameBytes, SharedFrame, Slice, events_json, thin
from app.settings import Settings
from app.store import Store
from pipecore.parts import Part
from pipecore.runs import BaseRun, RunManager

if TYPE_CHECKING:  # a viewer holds its hub; the hub only calls the viewers it is given
    from app.viewer import Viewer

Batch = list[Part]

TERMINAL_STATES = frozenset({"completed", "failed", "stopped", "timeout", "deadlock", "killed"})
# A slice (one `events` frame) holds parts (pipecore.parts, at most PART_EVENTS events
# each) up to about this size.
MAX_FRAME_BYTES = 1 << 20
# Thinned frames kept per run for viewers that are a frame or two apart.
FRAMES_SHARED = 4


class Channel:
    """One run's stream on the loop, cut into slices at most `interval` apart (or about
    MAX_FRAME_BYTES long) that every viewer of the run shares."""

    def __init__(self, unsubscribe: Callable[[], None]) -> None:
        self.unsubscribe = unsubscribe
        self.viewers: set[Viewer] = set()
        # Watched runs stay open until they end, for the `runs` broadcast.
        self.watched = False
        # The parts of the slice being cut, their JSON's length, and when one was last cut.
        self.open: list[Part] = []
        self.open_bytes = 0
        self.cut_at = float("-inf")
        self.timer: asyncio.TimerHandle | None = None
        # Counts the slices handed out and the parts dropped while nobody viewed: a
        # snapshot taken since the last count still joins on to the next slice.
        self.epoch = 0
        self._snapshot: tuple[int, SharedFrame, int] | None = None

    def shared_snapshot(self, take: Callable[[], tuple[Frame, int]]) -> tuple[Frame, int]:
        """A resynchronising snapshot frame and the events published when it was taken:
        the one taken for another viewer since the last slice was handed out, if any (the
        events after it wait in the open slice for every viewer), else a new one."""
        if self._snapshot is None or self._snapshot[0] != self.epoch:
            frame, total = take()
            self._snapshot = (self.epoch, SharedFrame(frame), total)
        return self._snapshot[1], self._snapshot[2]


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
        # Slices are cut at most this often: a viewer that keeps up gets at most
        # `viewer_fps` events frames a second.
        self.interval = 1.0 / settings.viewer_fps
        # run id -> the latest thinned frames, with the parts and the `keep` they were built
        # for: one encode per variant, however many viewers asked for it.
        self._thinned: dict[str, deque[tuple[list[Part], int, FrameBytes]]] = {}

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
            _, unsubscribe = run.subscribe_parts(handler, tail=0)
            channel = self._channels[run.id] = Channel(unsubscribe)
        return channel

    def leave(self, run_id: str, viewer: "Viewer") -> None:
        channel = self._channels.get(run_id)
        if channel is None:
            return
        channel.viewers.discard(viewer)
        if not channel.viewers and not channel.watched:
            self._close_channel(run_id)

    def thinned_frame(
        self, run_id: str, parts: list[Part], keep: int, compress: bool = False
    ) -> bytes:
        """The `events` frame of these parts for a viewer that asked for thinned batches
        (docs/protocol.md, `thin`): every event but calls and output lines, the latest
        `keep` of those, and `skipped`, how many of them it leaves out. Built (and
        compressed, see FrameBytes) once for every viewer that waits for the same parts
        with the same `keep`."""
        built = self._thinned.get(run_id)
        if built is None and run_id in self._channels:
            built = self._thinned[run_id] = deque(maxlen=FRAMES_SHARED)
        for used, kept, frame in built or ():
            if kept == keep and _same_parts(used, parts):
                return frame.sent(compress)
        pieces, skipped = thin(parts, keep)
        frame = FrameBytes(events_json(run_id, pieces, skipped))
        if built is not None:
            built.append((parts, keep, frame))
        return frame.sent(compress)

    def _close_channel(self, run_id: str) -> None:
        self._thinned.pop(run_id, None)
        channel = self._channels.pop(run_id, None)
        if channel is not None:
            if channel.timer is not None:
                channel.timer.cancel()
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
            for part in batch:
                channel.open.append(part)
                channel.open_bytes += part.size
            self._cut_when_due(run_id, channel)
        else:
            channel.epoch += 1
        states = [state for part in batch for state in part.states]
        if not states:
            return
        self.broadcast_runs()
        if states[-1] in TERMINAL_STATES:
            # Nothing follows a run's terminal state; viewers keep what they were sent.
            self._cut(run_id, timed=False)
            self._close_channel(run_id)

    def _cut_when_due(self, run_id: str, channel: Channel) -> None:
        """Cut the open slice now if it is full, or if the last timed cut is `interval`
        old; otherwise make sure a timed cut is due then. A full slice cut in between
        leaves the timing as it is: what comes after it waits no longer for that."""
        if channel.open_bytes >= MAX_FRAME_BYTES:
            self._cut(run_id, timed=False)
        elif channel.timer is None:
            due = channel.cut_at + self.interval - self.loop.time()
            if due <= 0:
                self._cut(run_id)
            else:
                channel.timer = self.loop.call_later(due, self._cut, run_id)

    def _cut(self, run_id: str, timed: bool = True) -> None:
        """Hand the open slice to every viewer of the run."""
        channel = self._channels.get(run_id)
        if channel is None:
            return
        if timed:
            channel.timer = None
            channel.cut_at = self.loop.time()
        if not channel.open:
            return
        piece = Slice(run_id, channel.open)
        channel.open, channel.open_bytes = [], 0
        channel.epoch += 1
        for viewer in channel.viewers:
            viewer.deliver(run_id, piece)

    def summaries(self) -> list[dict[str, Any]]:
        return all_summaries(self.manager, self.records)

    def broadcast_runs(self) -> None:
        frame = {"type": "runs", "runs": self.summaries()}
        for viewer in self.viewers:
            viewer.push(frame)

    async def close(self) -> None:
        for run_id in list(self._channels):
            self._close_channel(run_id)
        for viewer in list(self.viewers):
            await viewer.close()


def _same_parts(one: Sequence[object], other: Sequence[object]) -> bool:
    return len(one) == len(other) and all(a is b for a, b in zip(one, other, strict=True))
