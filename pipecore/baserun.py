"""What every run shows: its state, outcome, bounded event record and subscribers."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pipecore.analysis import Analysis
from pipecore.outcome import Reason, RunState

Event = dict[str, Any]
Subscriber = Callable[[list[Event]], None]

logger = logging.getLogger("pipecore.runs")

MAX_UNSETTLED = 10_000
# What a run holds in memory: every event that draws its structure (kept), and the newest
# `live_events` of the others (calls, output, verdicts past the cap).
KEPT_KINDS = frozenset({"run", "pipe", "process", "attach"})
MAX_KEPT = 10_000
MAX_KEPT_VERDICTS = 1_000
LIVE_EVENTS = 100_000


class CapacityError(RuntimeError):
    """A cap (concurrent runs, processes per run) refused a new run."""


class NotControllable(RuntimeError):
    """A run whose processes this server does not own refuses stop and step."""


class BaseRun:
    """What every run shows: its summary, its numbered event stream and its subscribers."""

    def __init__(
        self,
        run_id: str,
        scenario: str,
        title: dict[str, str],
        params: dict[str, Any],
        start_method: str,
        *,
        step_mode: bool,
        deadlock_after_ns: int,
        live_events: int = LIVE_EVENTS,
    ) -> None:
        check_live_events(live_events)
        self.id = run_id
        self.scenario = scenario
        self.title = title
        self.params = params
        self.start_method = start_method
        self.state = RunState.STARTING
        self.message = ""
        self.reason: Reason | None = None
        self.started = time.time()
        self.ended: float | None = None
        self.step_mode = step_mode
        self._lock = threading.RLock()
        # The bounded record (see events()); _published counts every event ever published.
        self._kept: list[Event] = []
        self._kept_verdicts = 0
        self._recent: deque[Event] = deque(maxlen=live_events)
        self._published = 0
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber = 0
        self._seq = 0
        self._done = threading.Event()
        self._analysis = Analysis(run_id, deadlock_after_ns)
        self._verdicts: list[Event] = []
        # Receives published before the analysis matched them, and those it matched later.
        self._unsettled: list[Event] = []
        self._amended: deque[Event] = deque(maxlen=MAX_UNSETTLED)

    def summary(self) -> dict[str, Any]:
        """The protocol's run summary."""
        with self._lock:
            return {
                "id": self.id,
                "scenario": self.scenario,
                "title": dict(self.title),
                "params": dict(self.params),
                "start_method": self.start_method,
                "state": self.state.value,
                "message": self.message,
                "reason": None
                if self.reason is None
                else {"key": self.reason["key"], "args": dict(self.reason["args"])},
                "started": self.started,
                "ended": self.ended,
                "step_mode": self.step_mode,
                "verdicts": [
                    {"verdict": v["verdict"], "message": v["message"]} for v in self._verdicts
                ],
                "events": self._published,
                "events_held": len(self._kept) + len(self._recent),
            }

    def events(self) -> list[Event]:
        """The events the run holds, in `seq` order (a new list).

        A run holds every `run`, `pipe`, `process` and `attach` event (up to MAX_KEPT) and
        the first MAX_KEPT_VERDICTS verdicts, plus the newest `live_events` of the others;
        `summary()["events"]` counts all that were published.
        """
        with self._lock:
            return self._held(None)

    def _held(self, tail: int | None) -> list[Event]:
        recent: Iterable[Event] = self._recent
        if tail is not None:
            recent = itertools.islice(self._recent, max(0, len(self._recent) - tail), None)
        return list(heapq.merge(self._kept, recent, key=_seq))

    def subscribe(
        self, callback: Subscriber, *, tail: int | None = None
    ) -> tuple[list[Event], Callable[[], None]]:
        """Atomically take the events held so far and register `callback` for every later
        batch.

        The snapshot is what events() returns, or with `tail` the kept events and only the
        newest `tail` others, in `seq` order. The callback runs on the thread that publishes
        (a run's collector thread) with each batch in `seq` order; every event published
        after the snapshot reaches it exactly once. Call the returned function to
        unsubscribe; no batch is delivered after it returns.
        """
        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
            raise ValueError(f"tail must be an integer of 0 or more, got {tail!r}")
        with self._lock:
            key = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[key] = callback
            snapshot = self._held(tail)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return snapshot, unsubscribe

    def amended(self) -> list[Event]:
        """Events the analysis annotated (`match`, `latency_ns`, `corrupt`) after they were
        published: rare, since the stream is causal (a garbled frame matched late, a
        receive whose sender stalled over the collector's wait). A record re-saves them."""
        with self._lock:
            return list(self._amended)

    def stop(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def set_step_mode(self, on: bool) -> None:
        raise NotImplementedError

    def analysis_snapshot(self) -> dict[str, Any]:
        """Ends, statistics and verdicts as the analysis sees them now."""
        with self._lock:
            snapshot = self._analysis.snapshot()
            snapshot["verdicts"] = list(self._verdicts)
            return snapshot

    def wait(self, timeout: float | None = None) -> RunState:
        """Wait until the run has ended and been torn down (or `timeout`); return its state."""
        self._done.wait(timeout)
        return self.state

    def _run_event(self, state: RunState, message: str, why: Reason | None) -> Event:
        event: Event = {
            "run": self.id,
            "kind": "run",
            "t": time.monotonic_ns(),
            "pid": 0,
            "process": "pipescope",
            "state": state.value,
        }
        if state.terminal:
            event["message"] = message
            event["reason"] = why
        return event

    def _hold(self, batch: list[Event]) -> None:
        """Add published events to the bounded record (call under the lock)."""
        self._published += len(batch)
        for event in batch:
            kind = event.get("kind")
            if kind == "run" or (
                kind in KEPT_KINDS and len(self._kept) - self._kept_verdicts < MAX_KEPT
            ):
                self._kept.append(event)
            elif kind == "verdict" and self._kept_verdicts < MAX_KEPT_VERDICTS:
                self._kept.append(event)
                self._kept_verdicts += 1
            else:
                self._recent.append(event)

    def _publish(self, batch: list[Event], *, numbered: bool = False) -> None:
        with self._lock:
            if not numbered:
                for event in batch:
                    self._seq += 1
                    event["seq"] = self._seq
            self._hold(batch)
            # Delivered under the lock: a subscriber added now sees this batch either in
            # its snapshot or as a callback, never both, never neither.
            for callback in list(self._subscribers.values()):
                try:
                    callback(batch)
                except Exception:
                    logger.exception("run %s: a subscriber failed", self.id)


def _seq(event: Event) -> int:
    return int(event["seq"])


def check_live_events(live_events: object) -> int:
    """`live_events` if it is a count of 1 or more, else ValueError naming it."""
    if isinstance(live_events, bool) or not isinstance(live_events, int) or live_events < 1:
        raise ValueError(f"live_events must be an integer of 1 or more, got {live_events!r}")
    return live_events
