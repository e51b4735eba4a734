"""Ping-pong and streaming workloads: the traced Pipe against the raw one, in one run."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pipecore
from pipecore import telemetry
from pipecore.collector import Collector
from pipecore.ring import HEADER_BYTES, ensure_layout

# forkserver: each process starts as a cheap fork of one clean server (spawn costs ~0.1 s).
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["bench.pingpong"])


@dataclass(frozen=True)
class Workload:
    """One measured pattern: what is sent, how big, where the two processes run."""

    name: str
    pattern: str  # "pingpong" or "stream"
    size: int
    as_bytes: bool
    cpus: tuple[int, int]

    @property
    def label(self) -> str:
        kind = "send_bytes" if self.as_bytes else "send"
        where = "1 CPU" if self.cpus[0] == self.cpus[1] else "2 CPUs"
        return f"{self.pattern} {_size(self.size)} {kind}, {where}"


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    if n >= 1 << 10:
        return f"{n >> 10} KiB"
    return f"{n} B"


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _echo(conn: Connection, rounds: int, as_bytes: bool, cpu: int) -> None:
    _pin(cpu)
    if as_bytes:
        for _ in range(rounds):
            conn.send_bytes(conn.recv_bytes())
    else:
        for _ in range(rounds):
            conn.send(conn.recv())
    conn.close()


def _drain(conn: Connection, rounds: int, as_bytes: bool, cpu: int, done: Connection) -> None:
    _pin(cpu)
    if as_bytes:
        for _ in range(rounds):
            conn.recv_bytes()
    else:
        for _ in range(rounds):
            conn.recv()
    # A one-way pipe cannot answer: the untraced `done` pipe says every message arrived.
    done.send_bytes(b"done")
    done.close()
    conn.close()


def _drive(
    conn: Connection, work: Workload, rounds: int, result: Connection, done: Connection | None
) -> None:
    _pin(work.cpus[0])
    payload = b"x" * work.size
    send = conn.send_bytes if work.as_bytes else conn.send
    recv = conn.recv_bytes if work.as_bytes else conn.recv
    start = time.perf_counter()
    if done is None:
        for _ in range(rounds):
            send(payload)
            recv()
    else:
        for _ in range(rounds):
            send(payload)
        done.recv_bytes()
    result.send(time.perf_counter() - start)
    conn.close()


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


def measure(work: Workload, rounds: int, traced: bool) -> float:
    """Seconds for `rounds` round trips (or one-way messages) between two pinned processes."""
    make_pipe: Any = pipecore.Pipe if traced else CTX.Pipe
    result_r, result_w = CTX.Pipe(False)
    peer: BaseProcess
    if work.pattern == "pingpong":
        mine, theirs = make_pipe(True)
        done_r = done_w = None
        peer = CTX.Process(target=_echo, args=(theirs, rounds, work.as_bytes, work.cpus[1]))
    else:
        # Pipe(duplex=False) returns (reader, writer): the driver writes, the peer reads.
        theirs, mine = make_pipe(False)
        done_r, done_w = CTX.Pipe(False)
        peer = CTX.Process(
            target=_drain, args=(theirs, rounds, work.as_bytes, work.cpus[1], done_w)
        )
    driver = CTX.Process(target=_drive, args=(mine, work, rounds, result_w, done_r))
    peer.start()
    driver.start()
    for conn in (mine, theirs, result_w, done_r, done_w):
        if conn is not None:
            conn.close()
    seconds: float = result_r.recv()
    driver.join()
    peer.join()
    result_r.close()
    return seconds


# The headline workloads, both processes on one CPU.
PINNED: list[Workload] = [
    Workload("pp-100-obj", "pingpong", 100, False, (0, 0)),
    Workload("pp-100-bytes", "pingpong", 100, True, (0, 0)),
    Workload("pp-64k", "pingpong", 64 << 10, True, (0, 0)),
    Workload("pp-1m", "pingpong", 1 << 20, True, (0, 0)),
]


def hot_path(calls: int = 100_000, size: int = 100) -> dict[str, float]:
    """Microseconds per call (a send or a receive, both ends in this process, pinned to
    one CPU): raw and traced `send_bytes`/`recv_bytes` and `send`/`recv`. Telemetry
    records into a ring large enough that no collector has to drain it meanwhile, so
    this is the writer's cost alone."""
    _pin(0)
    payload = b"x" * size
    run_dir = tempfile.mkdtemp(prefix="pipescope-hot-", dir="/dev/shm")
    ensure_layout(run_dir, 8 * calls * (200 + size) + (1 << 20))
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
        pairs = {"raw": CTX.Pipe(), "traced": pipecore.Pipe()}
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


def one_repetition(rounds: dict[str, int], traced_first: bool) -> dict[str, Any]:
    """Raw and traced seconds of each pinned workload, back to back, with this
    process's writer; then the hot path."""
    seconds: dict[str, list[float]] = {}
    with traced_run():
        for work in PINNED:
            order = (True, False) if traced_first else (False, True)
            got = {t: measure(work, rounds[work.name], t) for t in order}
            seconds[work.name] = [got[False], got[True]]
    return {"writer": telemetry.WRITER, "seconds": seconds, "hot": hot_path()}


def compare(reps: int, budget: float) -> dict[str, Any]:
    """Raw against traced with the C writer and with the Python writer, `reps` times,
    alternating the writers' order (each repetition a fresh process per writer)."""
    rounds = {}
    for work in PINNED:
        probe = max(20, 2_000_000 // max(work.size, 1000) // 8)
        rounds[work.name] = max(20, int(probe * budget / measure(work, probe, False)))
    runs: dict[str, list[dict[str, Any]]] = {"c": [], "python": []}
    for rep in range(reps):
        writers = ("c", "python") if rep % 2 == 0 else ("python", "c")
        for writer in writers:
            env = {**os.environ, "PIPESCOPE_PURE_PYTHON": "1" if writer == "python" else "0"}
            arg = json.dumps({"rounds": rounds, "traced_first": rep % 2 == 1})
            out = subprocess.run(
                [sys.executable, "-c", "from bench.pingpong import main; main()", "--one", arg],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            runs[got["writer"]].append(got)
    table: dict[str, Any] = {"rounds": rounds}
    for writer, results in runs.items():
        if not results:
            continue
        row: dict[str, Any] = {}
        for work in PINNED:
            ratios = [r["seconds"][work.name][1] / r["seconds"][work.name][0] for r in results]
            row[work.name] = [statistics.median(ratios), min(ratios), max(ratios)]
        hot = {k: statistics.median(r["hot"][k] for r in results) for k in results[0]["hot"]}
        table[writer] = {"ratios": row, "hot_us": hot}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pingpong", description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per measurement")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(one_repetition(spec["rounds"], spec["traced_first"])))
        return 0
    table = compare(args.reps, args.budget)
    print(f"rounds per measurement: {table['rounds']}")
    print(f"{'workload (1 CPU)':<16} {'C writer':>24} {'Python writer':>24}")
    for work in PINNED:
        cells = []
        for writer in ("c", "python"):
            if writer in table:
                med, lo, hi = table[writer]["ratios"][work.name]
                cells.append(f"{med:.3f}x ({lo:.2f}–{hi:.2f})")
            else:
                cells.append("not built")
        print(f"{work.name:<16} {cells[0]:>24} {cells[1]:>24}")
    print("hot path, µs per call (median of repetitions, best of 3 loops each):")
    for writer in ("c", "python"):
        if writer in table:
            hot = {k: round(v, 3) for k, v in table[writer]["hot_us"].items()}
            print(f"  {writer:<7} {json.dumps(hot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
