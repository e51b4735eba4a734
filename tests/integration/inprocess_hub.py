"""An in-process hub for tests: a manager and a store, and a socket standing in for a viewer's."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from fastapi import WebSocket

from app.hub import LiveHub
from app.settings import Settings
from app.store import Store
from app.viewer import Viewer
from pipecore.baserun import LIVE_EVENTS
from pipecore.runs import BaseRun, RunManager

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


S = TypeVar("S", bound=NetworkSocket)


@dataclass
class StalledAndPrompt(Generic[S]):
    """A run watched by two viewers: one whose socket holds every send (until its
    `flowing` is set) and one whose socket takes them as they come."""

    run: BaseRun
    stalled: Viewer
    stalled_socket: S
    prompt: Viewer
    prompt_socket: S
    deadline: float  # for every wait of the test

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Wait, polling, until `done()`; past the deadline fail saying `what` never happened."""
        while not done():
            assert time.monotonic() < self.deadline, what
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def stalled_and_prompt(
    manager: RunManager, store: Store, backlog: int, socket: type[S]
) -> AsyncIterator[StalledAndPrompt[S]]:
    """A `backpressure` run of 12 messages, both viewers subscribed before it goes on,
    with `viewer_backlog` `backlog` and 50 frames a second; their senders run meanwhile."""
    settings = Settings(db=":memory:", viewer_backlog=backlog, viewer_fps=50)
    hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
    stalled_socket, prompt_socket = socket(stalled=True), socket(stalled=False)
    stalled = Viewer(hub, cast(WebSocket, stalled_socket))
    prompt = Viewer(hub, cast(WebSocket, prompt_socket))
    async with sending(stalled, prompt):
        run = manager.start("backpressure", {"messages": 12, "delay": 0.01}, step_mode=True)
        stalled.subscribe(run)
        prompt.subscribe(run)
        run.set_step_mode(False)
        yield StalledAndPrompt(
            run, stalled, stalled_socket, prompt, prompt_socket, time.monotonic() + 60
        )
