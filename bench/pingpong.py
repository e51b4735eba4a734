"""Ping-pong and streaming workloads: the traced Pipe against the raw one, in one run."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pipecore
from bench.hotpath import hot_path
from bench.tracedrun import traced_run
from bench.workload import Workload
from pipecore import telemetry

# forkserver: each process starts as a cheap fork of one clean server (spawn costs ~0.1 s).
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["bench.pingpong"])

# glibc serves a large allocation with mmap (page faults and zeroing on every 1 MiB frame)
# until a process frees such a block, which raises that threshold: whichever process has
# freed one runs a 1 MiB ping-pong up to 5 times faster. Freeing one here, in every process
# that imports the benchmark (the fork server preloads it), puts raw and traced processes
# in the same state.
_freed_block = bytearray(8 << 20)
del _freed_block


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _echo(conn: Connection, rounds: int, as_bytes: bool, cpu: int, result: Connection) -> None:
    _pin(cpu)
    start = time.process_time()
    if as_bytes:
        for _ in range(rounds):
            conn.send_bytes(conn.recv_bytes())
    else:
        for _ in range(rounds):
            conn.send(conn.recv())
    result.send(("peer", time.process_time() - start, _waited()))
    conn.close()


def _waited() -> float:
    # Seconds this process's writer waited for ring space (the collector draining).
    rec = telemetry.recorder()
    return 0.0 if rec is None else rec.waited_ns / 1e9


def _drain(
    conn: Connection, rounds: int, as_bytes: bool, cpu: int, done: Connection, result: Connection
) -> None:
    _pin(cpu)
    start = time.process_time()
    if as_bytes:
        for _ in range(rounds):
            conn.recv_bytes()
    else:
        for _ in range(rounds):
            conn.recv()
    result.send(("peer", time.process_time() - start, _waited()))
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
    cpu_start = time.process_time()
    if done is None:
        for _ in range(rounds):
            send(payload)
            recv()
    else:
        for _ in range(rounds):
            send(payload)
        done.recv_bytes()
    cpu = time.process_time() - cpu_start
    result.send(("driver", time.perf_counter() - start, cpu, _waited()))
    conn.close()


def measure(work: Workload, rounds: int, traced: bool) -> float:
    """Seconds for `rounds` round trips (or one-way messages) between two pinned processes."""
    return measure_with_cpu(work, rounds, traced).seconds


@dataclass(frozen=True)
class Timing:
    """One measurement: elapsed seconds; the CPU seconds both processes spent in their
    loops (on a shared machine, the time other processes take from the pinned CPU is in
    the first and not in the second); the seconds their writers waited for ring space;
    the CPU seconds of this process meanwhile (its collector thread, when traced)."""

    seconds: float
    cpu_seconds: float
    waited_seconds: float
    collector_seconds: float


def measure_with_cpu(work: Workload, rounds: int, traced: bool) -> Timing:
    """`measure`, with the CPU time and the ring waits of both processes."""
    collector_start = time.process_time()
    make_pipe: Any = pipecore.Pipe if traced else CTX.Pipe
    result_r, result_w = CTX.Pipe(False)
    peer: BaseProcess
    if work.pattern == "pingpong":
        mine, theirs = make_pipe(True)
        done_r = done_w = None
        peer = CTX.Process(
            target=_echo, args=(theirs, rounds, work.as_bytes, work.cpus[1], result_w)
        )
    else:
        # Pipe(duplex=False) returns (reader, writer): the driver writes, the peer reads.
        theirs, mine = make_pipe(False)
        done_r, done_w = CTX.Pipe(False)
        peer = CTX.Process(
            target=_drain, args=(theirs, rounds, work.as_bytes, work.cpus[1], done_w, result_w)
        )
    driver = CTX.Process(target=_drive, args=(mine, work, rounds, result_w, done_r))
    peer.start()
    driver.start()
    for conn in (mine, theirs, result_w, done_r, done_w):
        if conn is not None:
            conn.close()
    reports = {report[0]: report[1:] for report in (result_r.recv(), result_r.recv())}
    driver.join()
    peer.join()
    result_r.close()
    seconds, driver_cpu, driver_waited = reports["driver"]
    peer_cpu, peer_waited = reports["peer"]
    collector = time.process_time() - collector_start
    return Timing(seconds, driver_cpu + peer_cpu, driver_waited + peer_waited, collector)


# The headline workloads, both processes on one CPU.
PINNED: list[Workload] = [
    Workload("pp-100-obj", "pingpong", 100, False, (0, 0)),
    Workload("pp-100-bytes", "pingpong", 100, True, (0, 0)),
    Workload("pp-64k", "pingpong", 64 << 10, True, (0, 0)),
    Workload("pp-1m", "pingpong", 1 << 20, True, (0, 0)),
]


def one_repetition(rounds: dict[str, int], traced_first: bool) -> dict[str, Any]:
    """Raw and traced seconds of each pinned workload, back to back, with this
    process's writer; then the hot path."""
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    waited: dict[str, float] = {}
    collector: dict[str, float] = {}
    with traced_run():
        for work in PINNED:
            order = (True, False) if traced_first else (False, True)
            got = {t: measure_with_cpu(work, rounds[work.name], t) for t in order}
            seconds[work.name] = [got[False].seconds, got[True].seconds]
            cpu[work.name] = [got[False].cpu_seconds, got[True].cpu_seconds]
            waited[work.name] = got[True].waited_seconds / got[True].seconds
            collector[work.name] = got[True].collector_seconds / got[True].seconds
    return {
        "writer": telemetry.WRITER,
        "seconds": seconds,
        "cpu": cpu,
        "waited": waited,
        "collector": collector,
        "hot": hot_path(),
    }


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
        cpu_row: dict[str, Any] = {}
        for work in PINNED:
            for key, into in (("seconds", row), ("cpu", cpu_row)):
                ratios = [r[key][work.name][1] / r[key][work.name][0] for r in results]
                into[work.name] = [statistics.median(ratios), min(ratios), max(ratios)]
        hot = {k: statistics.median(r["hot"][k] for r in results) for k in results[0]["hot"]}
        table[writer] = {"ratios": row, "cpu_ratios": cpu_row, "hot_us": hot}
        for key in ("waited", "collector"):
            table[writer][key] = {
                w.name: statistics.median(r[key][w.name] for r in results) for w in PINNED
            }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pingpong", description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per measurement")
    parser.add_argument(
        "--collector-cpu",
        type=int,
        help="pin this process (its collector thread) to this CPU; unpinned by default",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.collector_cpu is not None:
        _pin(args.collector_cpu)  # the repetitions' processes inherit it
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(one_repetition(spec["rounds"], spec["traced_first"])))
        return 0
    table = compare(args.reps, args.budget)
    print(f"rounds per measurement: {table['rounds']}")
    for key, what in (("ratios", "elapsed"), ("cpu_ratios", "CPU time of both processes")):
        print(f"traced/raw, {what}:")
        print(f"{'workload (1 CPU)':<16} {'C writer':>24} {'Python writer':>24}")
        for work in PINNED:
            cells = []
            for writer in ("c", "python"):
                if writer in table:
                    med, lo, hi = table[writer][key][work.name]
                    cells.append(f"{med:.3f}x ({lo:.2f}–{hi:.2f})")
                else:
                    cells.append("not built")
            print(f"{work.name:<16} {cells[0]:>24} {cells[1]:>24}")
    for key, what in (
        ("waited", "traced writers waiting for ring space"),
        ("collector", "the collector thread's CPU time"),
    ):
        print(f"{what}, share of the traced elapsed time (median):")
        for work in PINNED:
            cells = [
                f"{table[w][key][work.name]:.1%}" if w in table else "-" for w in ("c", "python")
            ]
            print(f"{work.name:<16} {cells[0]:>24} {cells[1]:>24}")
    print("hot path, µs per call (median of repetitions, best of 3 loops each):")
    for writer in ("c", "python"):
        if writer in table:
            hot = {k: round(v, 3) for k, v in table[writer]["hot_us"].items()}
            print(f"  {writer:<7} {json.dumps(hot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
