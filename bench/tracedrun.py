"""A traced run for the benchmarks: telemetry on, and a collector thread draining it."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from pipecore import telemetry
from pipecore.collector import Collector
from pipecore.eventpump import drain_again

# The CPUs the collector threads should keep to (None: any); `collector_off` sets it,
# and each thread applies it after each drain.
_preferred: list[set[int] | None] = [None]


@contextmanager
def collector_off(cpus: Iterable[int]) -> Iterator[None]:
    """Keep the collector threads off `cpus` (where the measured processes run) while
    another CPU is left for them, until a writer waits for ring space.

    The measured pair is pinned to one CPU. A collector left free runs there whenever
    the scheduler finds the other CPU busier, and its CPU time (12–15% of the pair's
    elapsed time at 64 KiB) then lands in the traced elapsed time or not, from one run
    to the next. Kept off it, it cannot add to the pair's time; but once it falls behind
    (the other CPUs busy) and the writers wait for it, their CPU idle, it may run
    anywhere until the measurement ends. What it costs the pair then shows as those waits.
    Not the default: on a machine whose other CPU is busy, the 100 B ping-pong's writers
    then waited for ring space a third to a half of their time (21 runs, shared machine).
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    everywhere = os.sched_getaffinity(0)
    elsewhere = everywhere - {c % (os.cpu_count() or 1) for c in cpus}
    _preferred[0] = elsewhere if elsewhere and elsewhere != everywhere else None
    try:
        yield
    finally:
        _preferred[0] = None


@contextmanager
def traced_run() -> Iterator[Callable[[], int]]:
    """A run directory with telemetry active and a collector thread draining it."""
    run_dir = tempfile.mkdtemp(prefix="pipescope-bench-", dir="/dev/shm")
    collector = Collector(run_dir, "bench")
    telemetry.activate(run_dir, "bench")
    print(f"record writer: {telemetry.WRITER}", flush=True)
    stop = threading.Event()
    drained = [0]
    place = hasattr(os, "sched_setaffinity")
    everywhere = os.sched_getaffinity(0) if place else set()

    def loop() -> None:
        current = everywhere
        while not stop.is_set():
            # Before the drain, which lets waiting writers go on at once.
            if place and _preferred[0] is not None and collector.writers_waiting():
                # The other CPUs are too busy for it: from now until the next
                # measurement it may run anywhere, on the waiting writers' CPU too.
                _preferred[0] = None
            got = len(collector.drain())
            drained[0] += got
            if place:
                wanted = _preferred[0] or everywhere
                if wanted != current:
                    os.sched_setaffinity(0, wanted)  # 0: this thread
                    current = wanted
            if not drain_again(collector, got):  # as a run's collector process does
                stop.wait(0.01)
        drained[0] += len(collector.drain())

    thread = threading.Thread(target=loop, name="pipescope-bench-collector", daemon=True)
    thread.start()
    try:
        yield lambda: drained[0]
    finally:
        telemetry.deactivate()
        stop.set()
        thread.join()
        collector.close()
        shutil.rmtree(run_dir, ignore_errors=True)
