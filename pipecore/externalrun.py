"""A program traced elsewhere (`pipescope trace --server`) whose events stream in as a run."""

from __future__ import annotations

import time

from pipecore.baserun import LIVE_EVENTS, MAX_KEPT_VERDICTS, BaseRun, NotControllable
from pipecore.eventcheck import EventError, check_batch
from pipecore.outcome import RunState
from pipecore.reasons import Reason, reason

# An external run's summary: the program chose its own start method, unseen by the server.
EXTERNAL_SCENARIO = "trace"
EXTERNAL_START_METHOD = "external"
# A traced program has no time limit: this bounds what one may stream in.
MAX_EXTERNAL_EVENTS = 1_000_000


class ExternalRun(BaseRun):
    """A program traced elsewhere (`pipescope trace --server`) whose events are streamed in.

    The tracer numbers the events and runs the analysis; this run checks each batch
    (`pipecore.eventcheck.check_batch`), keeps it and hands it to subscribers. It ends with
    the tracer's terminal `run` event, or in `failed` when the tracer disconnects first.
    """

    def __init__(
        self, run_id: str, name: str, *, deadlock_after_ns: int, live_events: int = LIVE_EVENTS
    ) -> None:
        super().__init__(
            run_id,
            EXTERNAL_SCENARIO,
            {"en": name, "zh": name},
            {},
            EXTERNAL_START_METHOD,
            step_mode=False,
            deadlock_after_ns=deadlock_after_ns,
            live_events=live_events,
        )

    def ingest(self, batch: object) -> None:
        """Check and publish a batch from the tracer; EventError says what is wrong with it."""
        with self._lock:
            if self.state.terminal:
                raise EventError(
                    f"expected no more events after the run ended ({self.state.value}), got more"
                )
            events = check_batch(batch, self.id, self._seq + 1)
            if self._published + len(events) > MAX_EXTERNAL_EVENTS:
                raise EventError(
                    f"expected at most {MAX_EXTERNAL_EVENTS} events in a traced run, "
                    f"got {self._published + len(events)}"
                )
            self._seq += len(events)
            # The tracer's own analysis annotated the events; this one only keeps the ends
            # and statistics for GET /api/runs/{id}, so it works on copies.
            self._analysis.feed([dict(event) for event in events])
            for event in events:
                if event["kind"] == "verdict" and len(self._verdicts) < MAX_KEPT_VERDICTS:
                    self._verdicts.append(event)
                elif event["kind"] == "run":
                    self.state = RunState(event["state"])
                    self.message = str(event.get("message") or "")
                    self.reason = event.get("reason")
            if self.state.terminal:
                self.ended = time.time()
            self._publish(events, numbered=True)
            if self.state.terminal:
                self._done.set()

    def disconnect(self, message: str, why: Reason | None = None) -> None:
        """The tracer is gone: end the run as failed unless it had ended already.

        `why` is the structured reason (default: "disconnected").
        """
        with self._lock:
            if self.state.terminal:
                return
            self.state = RunState.FAILED
            self.message = message
            self.reason = why if why is not None else reason("disconnected")
            self.ended = time.time()
            self._publish([self._run_event(RunState.FAILED, message, self.reason)])
        self._done.set()

    def stop(self) -> None:
        raise NotControllable(self._refusal("stopped"))

    def step(self) -> None:
        raise NotControllable(self._refusal("stepped"))

    def set_step_mode(self, on: bool) -> None:
        raise NotControllable(self._refusal("stepped"))

    def _refusal(self, what: str) -> str:
        return (
            f"run {self.id!r} traces a program running elsewhere: it cannot be {what} "
            "from here; stop the program where it runs (Ctrl-C reaches it through the tracer)"
        )
