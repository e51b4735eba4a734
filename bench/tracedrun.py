"""A traced run for the benchmarks: telemetry on, and a collector thread draining it."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pipecore import telemetry
from pipecore.collector import Collector


@contextmanager
def traced_run() -> Iterator[Callable[[], int]]:
    """A run directory with telemetry active and a collector thread draining it."""
    run_dir = tempfile.mkdtemp(prefix="pipescope-bench-", dir="/dev/shm")
    collector = Collector(run_dir, "bench")
    telemetry.activate(run_dir, "bench")
    print(f"record writer: {telemetry.WRITER}", flush=True)
    stop = threading.Event()
    drained = [0]

    def loop() -> None:
        while not stop.is_set():
            drained[0] += len(collector.drain())
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
