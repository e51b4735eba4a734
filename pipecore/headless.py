"""`pipescope run SCENARIO`: run a scenario without the server and print its events."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from pipecore.runs import START_METHODS, CapacityError, RunManager, RunState
from pipecore.scenarios import SCENARIOS, ParamError, get_scenario

Event = dict[str, Any]
TERMINAL_STATES = frozenset(state.value for state in RunState if state.terminal)
# Each stops the run, which is torn down and prints its last events, as Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `run` subcommand's arguments to `parser`."""
    parser.add_argument("scenario", help="one of: " + ", ".join(SCENARIOS))
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario parameter (repeatable)",
    )
    parser.add_argument("--start-method", default="forkserver", choices=START_METHODS)
    parser.add_argument("--format", default="text", choices=("text", "jsonl"))
    parser.add_argument("--timeout", type=float, default=None, help="run time limit in seconds")


def parse_params(scenario_id: str, pairs: list[str]) -> dict[str, object]:
    """Typed parameters from KEY=VALUE texts; ParamError names the bad one."""
    scenario = get_scenario(scenario_id)
    known = {param.name: param for param in scenario.params}
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ParamError("param", f"--param must be KEY=VALUE, got {pair!r}")
        if key not in known:
            expected = ", ".join(known) if known else "no parameters"
            raise ParamError(
                key, f"unknown parameter {key!r} for {scenario_id}; expected {expected}"
            )
        values[key] = known[key].parse(text)
    return values


def format_event(event: Event, t0: int) -> str:
    """One readable line for an event."""
    at = f"{(int(event.get('t', t0)) - t0) / 1e9:8.3f}s"
    who = f"{event.get('process', '')}({event.get('pid', 0)})"
    kind = event.get("kind")
    if kind == "call":
        parts = [f"{event.get('pipe_name') or event.get('pipe')}/{event.get('end')}"]
        parts.append(f"{event.get('op')} {event.get('phase')}")
        if "nbytes" in event:
            parts.append(f"{event['nbytes']} B")
        if "preview" in event:
            parts.append(str(event["preview"]))
        if "result" in event:
            parts.append(f"-> {event['result']}")
        if "error_type" in event:
            parts.append(f"{event['error_type']}: {event.get('error', '')}")
        if "corrupt" in event:
            parts.append(f"CORRUPT: {event['corrupt']}")
        return f"{at} {who} " + "  ".join(parts)
    if kind == "output":
        return f"{at} {who} {event.get('stream')}| {event.get('text')}"
    if kind == "process":
        extra = f" exitcode={event.get('exitcode')}" if event.get("op") == "exit" else ""
        return f"{at} {who} process {event.get('op')}{extra}"
    if kind == "thread":
        n = event.get("helpers") or 0
        feeders = f": {n} Queue feeder{'s' if n > 1 else ''}" if n else ""
        threads = event.get("threads")
        plural = "" if threads == 1 else "s"
        return f"{at} {who} thread {event.get('op')} ({threads} thread{plural}{feeders})"
    if kind == "pipe":
        return (
            f"{at} {who} pipe {event.get('pipe_name')} ({event.get('pipe')}) "
            f"duplex={event.get('duplex')} {event.get('transport')} "
            f"capacity={event.get('capacity')}"
        )
    if kind == "attach":
        return f"{at} {who} attach {event.get('pipe_name')}/{event.get('end')}"
    if kind == "verdict":
        return f"{at} VERDICT {event.get('verdict')}: {event.get('message')}"
    if kind == "run":
        message = f": {event['message']}" if event.get("message") else ""
        return f"{at} RUN {event.get('state')}{message}"
    return f"{at} {who} {kind}"


class _Printer:
    """Prints events as they come, in the chosen format, and notices the run's end."""

    def __init__(self, stream: TextIO, fmt: str) -> None:
        self.stream = stream
        self.format = fmt
        self.t0: int | None = None
        self.ended = False
        self.closed = False  # the reader went away (`pipescope run … | head`)

    def write(self, batch: list[Event]) -> None:
        if any(e.get("kind") == "run" and e.get("state") in TERMINAL_STATES for e in batch):
            self.ended = True
        if self.closed:
            return
        try:
            self._print(batch)
        except BrokenPipeError:
            # Like any filter's reader leaving: stop quietly. Python would still try to
            # flush the dead stream at exit and print a traceback; it gets /dev/null.
            self.closed = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)

    def _print(self, batch: list[Event]) -> None:
        for event in batch:
            if self.t0 is None:
                self.t0 = int(event.get("t", 0))
            if self.format == "jsonl":
                line = json.dumps(event, ensure_ascii=False, default=str)
            else:
                line = format_event(event, self.t0)
            self.stream.write(line + "\n")
        self.stream.flush()


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the scenario named in `args`, print its events, and return the exit code.

    0 when the run completed, 1 when it failed, deadlocked, timed out or was stopped,
    2 on bad arguments (with a one-line error on stderr).
    """
    stop = threading.Event()
    with _stopped_by_signals(stop):
        return _run(args, out if out is not None else sys.stdout, stop)


def _run(args: argparse.Namespace, stream: TextIO, stop: threading.Event) -> int:
    manager = RunManager()
    try:
        params = parse_params(args.scenario, list(args.param))
        timeout = args.timeout
        run = manager.start(args.scenario, params, start_method=args.start_method, timeout=timeout)
    except (ParamError, CapacityError) as exc:
        print(f"pipescope run: error: {exc}", file=sys.stderr)
        manager.shutdown()
        return 2
    batches: queue.Queue[list[Event]] = queue.Queue()
    snapshot, unsubscribe = run.subscribe(batches.put)
    printer = _Printer(stream, args.format)
    try:
        printer.write(snapshot)
        stopping = False
        while not printer.ended:
            if (stop.is_set() or printer.closed) and not stopping:
                stopping = True
                run.stop()
            with contextlib.suppress(queue.Empty):
                printer.write(batches.get(timeout=0.1))
    finally:
        unsubscribe()
        manager.shutdown()
    return 0 if run.state is RunState.COMPLETED else 1


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP set `stop` instead of ending the process, so
    that the run is torn down (its processes ended, its shared memory removed) and its
    last events print. From a thread other than the main one, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipecore.headless SCENARIO ...` (the same as `pipescope run`)."""
    parser = argparse.ArgumentParser(prog="pipescope run")
    add_run_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
