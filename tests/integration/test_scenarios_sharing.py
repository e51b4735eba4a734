"""The sharing scenarios really share: every stage, consumer and reader takes part, as the
events of a real run show it, under every start method."""

from collections.abc import Iterator
from typing import Any

import pytest

from pipecore.runs import RunManager, RunState
from pipecore.scenarios import get_scenario

Event = dict[str, Any]
START_METHODS = ["forkserver", "spawn", "fork"]


@pytest.fixture(scope="module")
def manager() -> Iterator[RunManager]:
    runs = RunManager(max_runs=2)
    yield runs
    runs.shutdown()


def run_events(manager: RunManager, scenario: str, method: str, **params: object) -> list[Event]:
    run = manager.start(scenario, params, start_method=method)
    state = run.wait(60)
    events: list[Event] = run.events()
    assert state is RunState.COMPLETED, [e.get("message") for e in events if e["kind"] == "run"]
    return events


def calls(
    events: list[Event], process: str, op: str, pipe_name: str, phase: str = "end"
) -> list[Event]:
    """The `phase` of every `op` the process made on the pipe so named, in time order."""
    found = [
        e
        for e in events
        if e["kind"] == "call"
        and e["phase"] == phase
        and e["process"] == process
        and e["op"] == op
        and e["pipe_name"] == pipe_name
    ]
    return sorted(found, key=lambda e: e["t"])


def lifetimes(events: list[Event]) -> dict[str, tuple[int, int]]:
    """Each process's (start, exit) times, by name."""
    times: dict[str, dict[str, int]] = {}
    for e in events:
        if e["kind"] == "process":
            times.setdefault(e["process"], {})[e["op"]] = e["t"]
    return {name: (t["start"], t["exit"]) for name, t in times.items()}


@pytest.mark.parametrize("method", START_METHODS)
def test_pipeline_stages_exist_first_then_work_on_items_at_the_same_time(
    manager: RunManager, method: str
) -> None:
    stages = 3
    events = run_events(manager, "pipeline", method, stages=stages, items=10)
    alive = lifetimes(events)
    # A send's `begin` precedes its frame's arrival; its `end` may be stamped after it.
    fed = calls(events, "source", "send", "link 0", "begin")
    assert len(fed) == 11  # ten items and the sentinel
    first_fed, last_fed = fed[0]["t"], fed[-1]["t"]
    names = [*(f"stage-{k}" for k in range(1, stages + 1)), "sink"]
    # The whole line exists before the first item enters it, and lives until it is fed.
    for name in names:
        start, end = alive[name]
        assert start < first_fed, f"{name} started after the first item was sent"
        assert end > last_fed, f"{name} exited before the source was done"
    # Each stage, the last one too, received its first item while the source still fed it.
    busy: list[tuple[int, int, str]] = []
    for k in range(1, stages + 1):
        name = f"stage-{k}"
        got = calls(events, name, "recv", f"link {k - 1}")
        passed = calls(events, name, "send", f"link {k}")
        assert len(got) == len(passed) == 11
        assert got[0]["t"] < last_fed, f"{name} got its first item after the source was done"
        # An item is in the stage from its receive to the send of its result.
        busy += [(a["t"], b["t"], name) for a, b in zip(got[:-1], passed[:-1], strict=True)]
    # At some moment two stages or more each held an item (necessarily different ones).
    most = max(len({name for a, b, name in busy if a <= t < b}) for t, _, _ in busy)
    assert most >= 2, "no two stages ever worked at the same time"


@pytest.mark.parametrize("method", START_METHODS)
def test_lock_queue_every_consumer_takes_items_from_the_pipe_and_the_queue(
    manager: RunManager, method: str
) -> None:
    events = run_events(manager, "lock-queue", method)
    consumers = ["consumer-0", "consumer-1"]
    for name in consumers:
        # Each consumer also receives exactly one None on each channel: its stop signal.
        items = [e for e in calls(events, name, "recv", "locked Pipe") if e["type"] != "NoneType"]
        assert items, f"{name} got nothing from the locked Pipe"
        assert len(calls(events, name, "recv_bytes", "Queue's own pipe")) >= 2, (
            f"{name} got nothing from the Queue"
        )
    lines = [e["text"] for e in events if e["kind"] == "output"]
    for label in ("C0", "C1"):
        for channel in ("locked Pipe", "Queue"):
            [line] = [x for x in lines if x.startswith(f"{label}: ") and x.endswith(channel)]
            assert not line.startswith(f"{label}: 0 items"), line
    assert not [e for e in events if e["kind"] == "verdict" and e["verdict"] == "corrupt"]


def test_lock_queue_ends_when_the_queue_holds_more_than_its_pipe(manager: RunManager) -> None:
    # 3,000 items of the Queue do not fit its pipe while the consumers still read the
    # locked Pipe: the producers' feeders wait for them. The run used to wait for the
    # producers before sending the Pipe's stop signals, and timed out.
    events = run_events(manager, "lock-queue", "forkserver", items=1000, producers=3, work=0)
    lines = sorted(e["text"] for e in events if e["kind"] == "output")
    got = [int(line.split()[1]) for line in lines if line.endswith("from the Queue")]
    assert sum(got) == 3000, lines


@pytest.mark.parametrize("method", START_METHODS)
def test_race_locked_every_reader_takes_frames_and_none_is_corrupted(
    manager: RunManager, method: str
) -> None:
    events = run_events(manager, "race-locked", method)
    for name in ("reader-1", "reader-2"):
        frames = calls(events, name, "recv_bytes", "two readers, locked")
        assert [e for e in frames if e["nbytes"]], f"{name} got no frame"
    assert not [e for e in events if e["kind"] == "verdict" and e["verdict"] == "corrupt"]
    assert not [e for e in events if e["kind"] == "call" and "corrupt" in e]
    lines = [e["text"] for e in events if e["kind"] == "output"]
    assert len(lines) == 3 and all(line.endswith("frames, all intact") for line in lines)
    assert not [line for line in lines if ": 0 frames" in line], lines


def test_the_largest_counts_still_run_at_the_default_pace_and_work() -> None:
    assert get_scenario("pipeline").validate({"items": 1000, "stages": 12})["pace"] == 0.02
    assert get_scenario("lock-queue").validate({"items": 1000})["work"] == 0.01
