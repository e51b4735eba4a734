"""Spares: started ahead of the runs, one at a time, and not while the runs flood."""

import threading
from types import SimpleNamespace

import pytest

from pipecore import spares
from pipecore.spares import Spares


class _NoTimer:
    """A refill timer that never fires by itself: the test calls _refill."""

    def __init__(self, delay: float, function: object) -> None:
        self.daemon = False

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        pass


def test_a_spare_waits_while_the_runs_flood_and_starts_once_they_calm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a spare's interpreters took 0.3-0.45 CPU-seconds out of a one-second flood."""
    clock = [1000.0]
    published = [0]
    started: list[str] = []
    monkeypatch.setattr("pipecore.spares.time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr("pipecore.collectmain.start_spare", lambda nice=0: started.append("c"))
    monkeypatch.setattr("pipecore.collectmain.end", lambda spare: None)
    monkeypatch.setattr("threading.Timer", _NoTimer)
    lock = threading.Lock()
    pool = Spares(lock, lambda: published[0], collectors=1, mains=0)
    assert started == ["c"], "the first spare starts at once"

    def look(seconds: float, events: int) -> None:
        clock[0] += seconds
        published[0] += events
        pool._refill()

    with lock:
        assert pool.take_collector() is None  # the stand-in start_spare returned None
    look(0.1, 30_000)  # 300,000 events/s
    assert started == ["c"], "a spare started amid a flood"
    look(0.1, 3_000)  # 30,000 events/s: still above BUSY_EVENTS_PER_S
    assert started == ["c"]
    look(0.1, 1_000)  # 10,000 events/s: calm
    assert started == ["c", "c"]
    # Patience: a flood that does not end delays a spare at most SPARE_PATIENCE.
    with lock:
        pool.take_collector()
    waited = 0.0
    while not started[2:]:
        look(0.1, 100_000)
        waited += 0.1
        assert waited <= spares.SPARE_PATIENCE + 0.15, "the spare waited forever"
    assert waited >= spares.SPARE_PATIENCE - 0.05
    pool.close()
    look(1.0, 0)
    assert started == ["c", "c", "c"], "a spare started after close"
