"""An in-process hub for tests: a manager and a store, and a socket standing in for a viewer's."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from app.store import Store
from app.viewer import Viewer
from pipecore.baserun import LIVE_EVENTS
from pipecore.runs import RunManager

Frame = dict[str, Any]


def run_with_manager_and_store(
    scenario: Callable[[RunManager, Store], Coroutine[Any, Any, None]],
    *,
    store: Store | None = None,
    live_events: int = LIVE_EVENTS,
) -> None:
    """Run an in-process hub scenario with a one-run manager and a store (in memory
    unless given), both shut down afterwards."""
    manager = RunManager(max_runs=1, live_events=live_events)
    store = Store(":memory:") if store is None else store
    try:
        asyncio.run(scenario(manager, store))
    finally:
        manager.shutdown()
        store.close()


class NetworkSocket:
    """Stands in for a viewer's websocket: records what is sent; `stall` holds every send."""

    def __init__(self, stalled: bool) -> None:
        self.sent: list[Frame] = []
        self.closed: tuple[int, str] | None = None
        self.flowing = asyncio.Event()
        if not stalled:
            self.flowing.set()

    async def send_text(self, text: str) -> None:
        await self.flowing.wait()
        self.sent.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        await self.flowing.wait()
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def held_events(self, run_id: str) -> list[Frame]:
        """What a page would hold: the last snapshot and the events after it."""
        events: list[Frame] = []
        for frame in self.sent:
            if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
                events = list(frame["events"])
            elif frame["type"] == "events" and frame["run"] == run_id:
                events += frame["events"]
        return events


@contextlib.asynccontextmanager
async def sending(*viewers: Viewer) -> AsyncIterator[None]:
    """Run the viewers' senders while the block runs; then stop them and unsubscribe."""
    senders = [asyncio.create_task(viewer.send_forever()) for viewer in viewers]
    try:
        yield
    finally:
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for viewer in viewers:
            viewer.unsubscribe_all()
