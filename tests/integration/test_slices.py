"""Slices: a run's stream cut once on the loop, every viewer sending the same frames."""

import asyncio
import json
import time
from typing import Any, cast

from fastapi import WebSocket

from app.frames import Slice
from app.hub import LiveHub
from app.settings import Settings
from app.store import Store
from app.viewer import Viewer
from pipecore.parts import part_of
from pipecore.runs import RunManager
from tests.integration.inprocess_hub import (
    NetworkSocket,
    run_with_manager_and_store,
    sending,
    stalled_and_prompt,
)

Frame = dict[str, Any]


class RawSocket(NetworkSocket):
    """A NetworkSocket that also keeps each `events` frame's bytes as they were sent."""

    def __init__(self, stalled: bool) -> None:
        super().__init__(stalled)
        self.raw: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        await super().send_bytes(data)
        self.raw.append(data)


def numbered(first: int, last: int) -> list[Frame]:
    return [
        {"seq": seq, "kind": "call", "op": "send", "phase": "end"} for seq in range(first, last + 1)
    ]


def test_a_viewer_slices_behind_sends_the_same_frames_as_one_that_keeps_up() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        # A backlog limit the run never reaches: the late viewer is behind, not resynchronised.
        async with stalled_and_prompt(manager, store, 100_000, RawSocket) as watch:
            run, late_socket, prompt_socket = watch.run, watch.stalled_socket, watch.prompt_socket
            await watch.until(
                lambda: run.state.terminal and prompt_socket.held_events(run.id) == run.events(),
                "the prompt viewer never got the whole run",
            )
            assert late_socket.raw == []
            late_socket.flowing.set()
            await watch.until(
                lambda: late_socket.held_events(run.id) == run.events(),
                "the late viewer never caught up",
            )
            # The run took several slices; the late viewer sent each of them as it was cut,
            # byte for byte, rather than one frame of its own joining them.
            assert len(prompt_socket.raw) >= 2
            assert late_socket.raw == prompt_socket.raw
            assert not any("notice" in f for f in late_socket.sent)

    run_with_manager_and_store(scenario)


def test_a_slice_reaching_a_viewer_partly_in_its_snapshot_brings_only_the_newer_events() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        one = Viewer(hub, cast(WebSocket, RawSocket(stalled=True)))
        one.subscriptions["r1"] = 5  # its snapshot held events 1 to 5
        old = Slice("r1", [part_of(numbered(1, 3)), part_of(numbered(4, 5))])
        straddling = Slice("r1", [part_of(numbered(1, 3)), part_of(numbered(4, 8))])
        newer = Slice("r1", [part_of(numbered(9, 10))])
        for piece in (old, straddling, newer):
            one.deliver("r1", piece)
        first, second = one.pending["r1"]
        assert [e["seq"] for e in json.loads(first.frame())["events"]] == [6, 7, 8]
        assert (first.first, first.last, first.count) == (6, 8, 3)
        assert second is newer  # shared with every other viewer, not copied
        assert one.backlog == 5
        assert one.subscriptions["r1"] == 10

    run_with_manager_and_store(scenario)


def test_a_slices_frame_is_built_once_and_holds_its_parts_in_order() -> None:
    piece = Slice("r1", [part_of(numbered(1, 2)), part_of(numbered(3, 3))])
    frame = piece.frame()
    assert piece.frame() is frame
    assert json.loads(frame) == {"type": "events", "run": "r1", "events": numbered(1, 3)}


def test_viewers_resynchronised_together_share_one_snapshot_and_miss_no_event() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        sockets = [RawSocket(stalled=False) for _ in range(2)]
        first, second = viewers = [Viewer(hub, cast(WebSocket, s)) for s in sockets]
        async with sending(*viewers):
            run = manager.start("ping-pong", {}, step_mode=True)
            for one in viewers:
                one.subscribe(run, behind=10)
            shared = first.outbox[-1]
            assert shared["type"] == "snapshot" and second.outbox[-1] is shared
            run.set_step_mode(False)
            deadline = time.monotonic() + 60
            while not all(one.subscriptions[run.id] > shared["run"]["events"] for one in viewers):
                assert time.monotonic() < deadline, "no slice reached the viewers"
                await asyncio.sleep(0.01)
            # A slice went out since: a snapshot taken before it would leave a gap.
            second.subscribe(run, behind=10)
            assert second.outbox[-1] is not shared
            while not run.state.terminal or any(
                s.held_events(run.id) != run.events() for s in sockets
            ):
                assert time.monotonic() < deadline, "a viewer never got the whole run"
                await asyncio.sleep(0.01)

    run_with_manager_and_store(scenario)
