"""Fixtures of the unit tests: a run directory and its collector, a RunManager, polling."""

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipecore import telemetry
from pipecore.collector import Collector
from pipecore.ring import ensure_layout
from pipecore.runs import RunManager

Event = dict[str, Any]
START_METHODS = ["spawn", "forkserver", "fork"]


@dataclass
class RunFixture:
    """A run directory with its collector; `events` accumulates every drained event."""

    run_dir: str
    run_id: str
    collector: Collector
    events: list[Event] = field(default_factory=list)

    def drain(self, *, final: bool = False) -> list[Event]:
        new = self.collector.drain(final=final)
        self.events.extend(new)
        return new

    def drain_until(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 20.0
    ) -> list[Event]:
        """Drain every 10 ms until `predicate(all events so far)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            if predicate(self.events):
                return self.events
            if time.monotonic() > deadline:
                kinds = [(e["kind"], e.get("op"), e.get("phase")) for e in self.events[-20:]]
                raise AssertionError(f"Expected events not seen in {timeout}s; last: {kinds}")
            time.sleep(0.01)

    def activate(self) -> None:
        telemetry.activate(self.run_dir, self.run_id)


def make_run(ring_bytes: int | None = None, window: int = 0) -> RunFixture:
    """A run directory whose rings hold `ring_bytes` and start with `window` (see
    `pipecore.ring.ensure_layout`), and its collector."""
    run_dir = tempfile.mkdtemp(prefix="pipescope-test-", dir="/dev/shm")
    run_id = "r" + os.path.basename(run_dir)[-6:]
    ensure_layout(run_dir, ring_bytes, window)
    return RunFixture(run_dir, run_id, Collector(run_dir, run_id, ring_bytes=ring_bytes))


@pytest.fixture
def run() -> Iterator[RunFixture]:
    """A fresh run directory and collector; telemetry is deactivated and all removed after."""
    fixture = make_run()
    try:
        yield fixture
    finally:
        telemetry.deactivate()
        fixture.collector.close()


def calls(events: list[Event], **match: object) -> list[Event]:
    """The `call` events whose fields equal every given value."""
    return [
        e for e in events if e["kind"] == "call" and all(e.get(k) == v for k, v in match.items())
    ]


@pytest.fixture
def manager() -> Iterator[RunManager]:
    runs = RunManager(max_runs=2, max_run_seconds=20.0)
    yield runs
    runs.shutdown()


def wait_for(predicate: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
