"""What every run shows: its state, outcome, bounded event record and subscribers."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pipecore.analysis import Analysis
from pipecore.outcome import RunState
from pipecore.parts import Part, is_kept, parts_of
from pipecore.reasons import Reason

Event = dict[str, Any]
Subscriber = Callable[[list[Event]], None]
PartsSubscriber = Callable[[list[Part]], None]

logger = logging.getLogger("pipecore.runs")

MAX_UNSETTLED = 10_000
# What a run holds in memory: every event that draws its structure (kept, KEPT_KINDS), and
# the newest `live_events` of the others (calls, output, verdicts past the cap).
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
        self._kept_seqs: set[int] = set()
        self._kept_verdicts = 0
        self._live_events = live_events
        # Parts of the stream, newest last, holding at least the newest `live_events` others.
        self._recent: deque[Part] = deque()
        self._recent_others = 0
        self._published = 0
        self._subscribers: dict[int, tuple[Subscriber | None, PartsSubscriber | None]] = {}
        self._next_subscriber = 0
        self._seq = 0
        self._done = threading.Event()
        self._analysis = Analysis(run_id, deadlock_after_ns)
        self._verdicts: list[Event] = []
        # Receives the analysis matched after they were published.
        self._amended: deque[Event] = deque(maxlen=MAX_UNSETTLED)
        # seq -> the amended form of an event held only as JSON (see amend()).
        self._patched: dict[int, Event] = {}

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
                "events_held": len(self._kept) + min(self._recent_others, self._live_events),
            }

    @property
    def published(self) -> int:
        """How many events the run has published so far."""
        return self._published

    def events(self) -> list[Event]:
        """The events the run holds, in `seq` order (a new list).

        A run holds every `run`, `pipe`, `process` and `attach` event (up to MAX_KEPT) and
        the first MAX_KEPT_VERDICTS verdicts, plus the newest `live_events` of the others;
        `summary()["events"]` counts all that were published.
        """
        with self._lock:
            return self._held(None)

    def _held(self, tail: int | None) -> list[Event]:
        limit = self._live_events if tail is None else min(tail, self._live_events)
        newest: list[list[Event]] = []
        count = 0
        kept, patched = self._kept_seqs, self._patched
        for part in reversed(self._recent):
            if count >= limit:
                break
            others = [patched.get(e["seq"], e) for e in part.events() if e["seq"] not in kept]
            newest.append(others)
            count += len(others)
        others = [event for chunk in reversed(newest) for event in chunk]
        others = others[len(others) - limit :] if limit else []
        return list(heapq.merge(self._kept, others, key=_seq))

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
        return self._subscribe((callback, None), tail)

    def subscribe_parts(
        self, callback: PartsSubscriber, *, tail: int | None = None
    ) -> tuple[list[Event], Callable[[], None]]:
        """subscribe(), with each batch as its `Part`s: their JSON is made (or was
        received) once for every subscriber, and their events are decoded only if asked."""
        return self._subscribe((None, callback), tail)

    def _subscribe(
        self, callbacks: tuple[Subscriber | None, PartsSubscriber | None], tail: int | None
    ) -> tuple[list[Event], Callable[[], None]]:
        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
            raise ValueError(f"tail must be an integer of 0 or more, got {tail!r}")
        with self._lock:
            key = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[key] = callbacks
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

    def _hold(self, parts: list[Part], kept: list[Event]) -> None:
        """Add published parts, and the kept events among them, to the bounded record
        (call under the lock)."""
        for event in kept:
            kind = event.get("kind")
            if kind == "verdict":
                if self._kept_verdicts >= MAX_KEPT_VERDICTS:
                    continue
                self._kept_verdicts += 1
            elif kind != "run" and len(self._kept) - self._kept_verdicts >= MAX_KEPT:
                continue
            self._kept.append(event)
            self._kept_seqs.add(int(event["seq"]))
        for part in parts:
            self._published += part.count
            self._recent.append(part)
            self._recent_others += part.others
        recent = self._recent
        while len(recent) > 1 and self._recent_others - recent[0].others >= self._live_events:
            self._recent_others -= recent.popleft().others
        if self._patched and recent:
            oldest = recent[0].first
            for seq in [s for s in self._patched if s < oldest]:
                del self._patched[seq]

    def amend(self, events: list[Event]) -> None:
        """Events the analysis annotated after they were published, held only as JSON:
        the record shows their amended form from now on (call under the lock)."""
        for event in events:
            self._amended.append(event)
            if len(self._patched) < MAX_UNSETTLED:
                self._patched[int(event["seq"])] = event

    def _publish(self, batch: list[Event], *, numbered: bool = False) -> None:
        with self._lock:
            if not numbered:
                for event in batch:
                    self._seq += 1
                    event["seq"] = self._seq
            if batch:
                self._publish_parts(parts_of(batch), [e for e in batch if is_kept(e)])

    def _publish_parts(self, parts: list[Part], kept: list[Event]) -> None:
        """Record the parts and hand them to every subscriber (call under the lock)."""
        self._hold(parts, kept)
        events: list[Event] | None = None
        # Delivered under the lock: a subscriber added now sees this batch either in
        # its snapshot or as a callback, never both, never neither.
        for plain, with_parts in list(self._subscribers.values()):
            try:
                if with_parts is not None:
                    with_parts(parts)
                elif plain is not None:
                    if events is None:
                        events = [event for part in parts for event in part.events()]
                    plain(events)
            except Exception:
                logger.exception("run %s: a subscriber failed", self.id)


def _seq(event: Event) -> int:
    return int(event["seq"])


def check_live_events(live_events: object) -> int:
    """`live_events` if it is a count of 1 or more, else ValueError naming it."""
    if isinstance(live_events, bool) or not isinstance(live_events, int) or live_events < 1:
        raise ValueError(f"live_events must be an integer of 1 or more, got {live_events!r}")
    return live_events
