"""app.viewer in process: a viewer's bounded backlog, its resynchronising snapshots, its outbox."""

import asyncio
import time
from typing import cast

from fastapi import WebSocket

from app.hub import LiveHub
from app.live import replay
from app.settings import Settings
from app.store import Store
from app.viewer import MAX_OUTBOX, OVERFLOW_REASON, RESYNC_TAIL, Viewer
from pipecore.runs import RunManager
from tests.integration.inprocess_hub import (
    NetworkSocket,
    run_with_manager_and_store,
    sending,
    stalled_and_prompt,
)


def test_a_stalled_viewer_stays_bounded_and_never_holds_up_another() -> None:
    limit = 20

    async def scenario(manager: RunManager, store: Store) -> None:
        async with stalled_and_prompt(manager, store, limit, NetworkSocket) as watch:
            run, stalled, stalled_socket = watch.run, watch.stalled, watch.stalled_socket
            healthy_socket = watch.prompt_socket
            largest = 0

            # The healthy viewer holds the whole run while the other one is stuck.
            def healthy_holds_the_run() -> bool:
                nonlocal largest
                largest = max(largest, stalled.backlog)
                return run.state.terminal and healthy_socket.held_events(run.id) == run.events()

            await watch.until(healthy_holds_the_run, "the healthy viewer never got the whole run")
            assert not any("notice" in f for f in healthy_socket.sent)
            assert largest <= limit
            assert stalled_socket.sent == []

            stalled_socket.flowing.set()
            await watch.until(
                lambda: stalled_socket.held_events(run.id) == run.events(),
                "the stalled viewer never caught up",
            )
            notices = [f["notice"] for f in stalled_socket.sent if "notice" in f]
            assert notices and f"fell more than {limit} events behind" in notices[0]

    run_with_manager_and_store(scenario)


def test_a_viewer_that_never_reads_is_dropped_with_a_reason_not_buffered_forever() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=True)
        stuck = Viewer(hub, cast(WebSocket, socket))
        sender = asyncio.create_task(stuck.send_forever())
        try:
            run = manager.start("ping-pong", {})
            for _ in range(50):  # re-subscribing never stacks up snapshots of one run
                stuck.subscribe(run)
            assert sum(f["type"] == "snapshot" for f in stuck.outbox) == 1
            for n in range(MAX_OUTBOX + 100):  # answers to a flood it never reads
                stuck.push({"type": "error", "message": f"bad frame {n}"})
            assert len(stuck.outbox) <= MAX_OUTBOX and stuck.overflowed
            assert stuck.subscriptions == {}
            socket.flowing.set()
            await asyncio.wait_for(sender, 10)
            assert socket.closed == (1008, OVERFLOW_REASON)
            run.wait(30)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    run_with_manager_and_store(scenario)


KEPT_KINDS = {"run", "pipe", "process", "attach", "verdict"}


def test_a_resynchronising_snapshot_is_bounded_and_counts_what_it_skipped() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        settings = Settings(db=":memory:", viewer_backlog=100, viewer_fps=50)
        hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=True)
        late = Viewer(hub, cast(WebSocket, socket))
        async with sending(late):
            run = manager.start("flood", {"messages": 2000})
            late.subscribe(run)
            deadline = time.monotonic() + 60
            while not run.state.terminal or late.behind == set():
                assert time.monotonic() < deadline, "the run never ended"
                await asyncio.sleep(0.01)
            socket.flowing.set()
            while (
                not socket.held_events(run.id)
                or socket.held_events(run.id)[-1] != (run.events()[-1])
            ):
                assert time.monotonic() < deadline, "the viewer never caught up"
                await asyncio.sleep(0.01)

        everything = run.events()
        resyncs = [f for f in socket.sent if f["type"] == "snapshot" and "skipped" in f]
        assert resyncs, [f.get("notice") for f in socket.sent if f["type"] == "snapshot"]
        snapshot = resyncs[0]
        events = snapshot["events"]
        total = events[-1]["seq"]
        others = [e for e in events if e["kind"] not in KEPT_KINDS]
        # Every kept event up to the snapshot's last, then only the newest calls and lines.
        assert [e for e in events if e["kind"] in KEPT_KINDS] == [
            e for e in everything[:total] if e["kind"] in KEPT_KINDS
        ]
        assert len(others) <= RESYNC_TAIL
        assert (
            others == [e for e in everything[:total] if e["kind"] not in KEPT_KINDS][-len(others) :]
        )
        skipped = total - len(events)
        assert skipped > 0 and snapshot["skipped"] == skipped
        assert snapshot["notice"] == (
            f"fell more than 100 events behind: showing {len(events):,} of {total:,} events, "
            f"{skipped:,} older calls and output lines skipped"
        )
        # What follows the snapshot continues it without a gap.
        assert [e["seq"] for e in socket.held_events(run.id) if e["seq"] > total] == list(
            range(total + 1, everything[-1]["seq"] + 1)
        )

    run_with_manager_and_store(scenario)


def test_the_first_snapshot_holds_what_the_run_keeps_and_says_what_it_left_out() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        hub = LiveHub(manager, store, Settings(db=":memory:"), asyncio.get_running_loop(), [])
        socket = NetworkSocket(stalled=False)
        late = Viewer(hub, cast(WebSocket, socket))
        run = manager.start("flood", {"messages": 1000})
        assert run.wait(60).value == "completed", run.message
        late.subscribe(run)
        (snapshot,) = [f for f in late.outbox if f["type"] == "snapshot"]
        late.unsubscribe_all()

        events, total = snapshot["events"], run.summary()["events"]
        assert events == run.events() and events[-1]["seq"] == total
        assert len([e for e in events if e["kind"] not in KEPT_KINDS]) == 1000
        skipped = total - len(events)
        assert skipped > 0 and snapshot["skipped"] == skipped
        assert snapshot["notice"].startswith(
            f"showing {len(events):,} of {total:,} events: {skipped:,} older calls and output "
            "lines are kept only in the run's record"
        )

    run_with_manager_and_store(scenario, live_events=1000)


def test_a_recorded_run_replays_bounded_like_a_run_in_memory() -> None:
    async def scenario(manager: RunManager, store: Store) -> None:
        settings = Settings(db=":memory:", live_events=1000)
        hub = LiveHub(manager, store, settings, asyncio.get_running_loop(), [])
        late = Viewer(hub, cast(WebSocket, NetworkSocket(stalled=False)))
        assert await replay(late, "old")
        (snapshot,) = [f for f in late.outbox if f["type"] == "snapshot"]
        events = snapshot["events"]
        assert [e["kind"] for e in events[:1]] == ["run"] and events[-1]["kind"] == "run"
        assert [e["seq"] for e in events[1:-1]] == list(range(502, 1502))
        assert snapshot["skipped"] == 500
        assert snapshot["notice"].startswith("showing 1,002 of 1,502 events: 500 older calls")

    record = [{"run": "old", "seq": 1, "kind": "run", "state": "running"}]
    record += [{"run": "old", "seq": s, "kind": "output", "text": f"{s}"} for s in range(2, 1502)]
    record += [{"run": "old", "seq": 1502, "kind": "run", "state": "completed"}]
    store = Store(":memory:")
    store.save_run({"id": "old", "started": 1.0, "state": "completed"})
    store.append_events(record)
    store.flush()
    run_with_manager_and_store(scenario, store=store)
