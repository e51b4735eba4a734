"""The record writer's cost per call, in one process: raw and traced Pipe, one CPU."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time

import pipecore
from pipecore import telemetry
from pipecore.ring import HEAD_STORE, HEADER_BYTES, ensure_layout


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def hot_path(calls: int = 100_000, size: int = 100) -> dict[str, float]:
    """Microseconds per call (a send or a receive, both ends in this process, pinned to
    one CPU): raw and traced `send_bytes`/`recv_bytes` and `send`/`recv`. Telemetry
    records into a ring large enough that no collector has to drain it meanwhile, so
    this is the writer's cost alone."""
    _pin(0)
    payload = b"x" * size
    run_dir = tempfile.mkdtemp(prefix="pipescope-hot-", dir="/dev/shm")
    # A call's records hold at most HEAD_STORE bytes of its frame, whatever its size.
    ensure_layout(run_dir, 8 * calls * (200 + min(size, HEAD_STORE)) + (1 << 20))
    telemetry.activate(run_dir, "hot")
    rec = telemetry.recorder()
    if rec is not None:
        # Touch the (zero, unpublished) data area first: a fresh page's first write
        # faults, which a ring in use, wrapping over the same pages, does not pay.
        chunk = bytes(16 << 20)
        for at in range(HEADER_BYTES, len(rec.mm), len(chunk)):
            end = min(at + len(chunk), len(rec.mm))
            rec.mm[at:end] = chunk[: end - at]
    try:
        pairs = {"raw": multiprocessing.Pipe(), "traced": pipecore.Pipe()}
        best: dict[str, float] = {}
        for _ in range(3):
            for kind, (a, b) in pairs.items():
                for as_bytes in (True, False):
                    send = a.send_bytes if as_bytes else a.send
                    recv = b.recv_bytes if as_bytes else b.recv
                    start = time.perf_counter()
                    for _ in range(calls // 2):
                        send(payload)
                        recv()
                    per_call = (time.perf_counter() - start) / calls * 1e6
                    key = f"{kind} {'bytes' if as_bytes else 'obj'}"
                    best[key] = min(best.get(key, per_call), per_call)
        for a, b in pairs.values():
            a.close()
            b.close()
    finally:
        telemetry.deactivate()
        shutil.rmtree(run_dir, ignore_errors=True)
    return best
