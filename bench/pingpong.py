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
from bench.pingpongreport import print_comparison
from bench.tracedrun import collector_off, traced_run
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
    delayed = _run_delay()
    if as_bytes:
        for _ in range(rounds):
            conn.send_bytes(conn.recv_bytes())
    else:
        for _ in range(rounds):
            conn.send(conn.recv())
    result.send(("peer", time.process_time() - start, _waited(), _run_delay() - delayed))
    conn.close()


def _run_delay() -> float:
    # Seconds this process was runnable but not running (another task had its CPU):
    # the second field of /proc/self/schedstat; 0 where the kernel does not keep it.
    try:
        with open("/proc/self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _waited() -> float:
    # Seconds this process's writer waited for ring space (the collector draining).
    rec = telemetry.recorder()
    return 0.0 if rec is None else rec.waited_ns / 1e9


def _drain(
    conn: Connection, rounds: int, as_bytes: bool, cpu: int, done: Connection, result: Connection
) -> None:
    _pin(cpu)
    start = time.process_time()
    delayed = _run_delay()
    if as_bytes:
        for _ in range(rounds):
            conn.recv_bytes()
    else:
        for _ in range(rounds):
            conn.recv()
    result.send(("peer", time.process_time() - start, _waited(), _run_delay() - delayed))
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
    delayed = _run_delay()
    if done is None:
        for _ in range(rounds):
            send(payload)
            recv()
    else:
        for _ in range(rounds):
            send(payload)
        done.recv_bytes()
    cpu = time.process_time() - cpu_start
    delay = _run_delay() - delayed
    result.send(("driver", time.perf_counter() - start, cpu, _waited(), delay))
    conn.close()


def measure(work: Workload, rounds: int, traced: bool) -> float:
    """Seconds for `rounds` round trips (or one-way messages) between two pinned processes."""
    return measure_with_cpu(work, rounds, traced).seconds


@dataclass(frozen=True)
class Timing:
    """One measurement: elapsed seconds; the CPU seconds both processes spent in their
    loops (on a shared machine, the time other processes take from the pinned CPU is in
    the first and not in the second); the seconds their writers waited for ring space;
    the CPU seconds of this process meanwhile (its collector thread, when traced); the
    seconds both processes were runnable but another task had their CPU."""

    seconds: float
    cpu_seconds: float
    waited_seconds: float
    collector_seconds: float
    delayed_seconds: float


def measure_with_cpu(work: Workload, rounds: int, traced: bool, *, apart: bool = False) -> Timing:
    """`measure`, with the CPU time and the ring waits of both processes. `apart`: keep
    the collector threads off the measured processes' CPUs meanwhile (`collector_off`)."""
    with collector_off(work.cpus if apart else ()):
        return _measure_with_cpu(work, rounds, traced)


def _measure_with_cpu(work: Workload, rounds: int, traced: bool) -> Timing:
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
    seconds, driver_cpu, driver_waited, driver_delay = reports["driver"]
    peer_cpu, peer_waited, peer_delay = reports["peer"]
    cpu, waited = driver_cpu + peer_cpu, driver_waited + peer_waited
    collector = time.process_time() - collector_start
    return Timing(seconds, cpu, waited, collector, driver_delay + peer_delay)


# The headline workloads, both processes on one CPU.
PINNED: list[Workload] = [
    Workload("pp-100-obj", "pingpong", 100, False, (0, 0)),
    Workload("pp-100-bytes", "pingpong", 100, True, (0, 0)),
    Workload("pp-64k", "pingpong", 64 << 10, True, (0, 0)),
    Workload("pp-1m", "pingpong", 1 << 20, True, (0, 0)),
]


def one_repetition(
    rounds: dict[str, int], traced_first: bool, apart: bool = False
) -> dict[str, Any]:
    """Raw and traced seconds of each pinned workload, back to back, with this
    process's writer; then the hot path."""
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    waited: dict[str, float] = {}
    collector: dict[str, float] = {}
    delayed: dict[str, list[float]] = {}
    with traced_run():
        for work in PINNED:
            order = (True, False) if traced_first else (False, True)
            got = {t: measure_with_cpu(work, rounds[work.name], t, apart=apart) for t in order}
            seconds[work.name] = [got[False].seconds, got[True].seconds]
            cpu[work.name] = [got[False].cpu_seconds, got[True].cpu_seconds]
            waited[work.name] = got[True].waited_seconds / got[True].seconds
            delayed[work.name] = [got[t].delayed_seconds / got[t].seconds for t in (False, True)]
            collector[work.name] = got[True].collector_seconds / got[True].seconds
    return {
        "writer": telemetry.WRITER,
        "seconds": seconds,
        "cpu": cpu,
        "waited": waited,
        "collector": collector,
        "delayed": delayed,
        "hot": hot_path(),
    }


def compare(reps: int, budget: float, apart: bool = False) -> dict[str, Any]:
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
            arg = json.dumps({"rounds": rounds, "traced_first": rep % 2 == 1, "apart": apart})
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
        # Raw and traced: the time others held the measured processes' CPU differs
        # between the two when the machine is shared, and the elapsed ratio with it.
        table[writer]["delayed"] = {
            w.name: [statistics.median(r["delayed"][w.name][i] for r in results) for i in (0, 1)]
            for w in PINNED
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
    parser.add_argument(
        "--collector-apart",
        action="store_true",
        help="keep the collector thread off the measured processes' CPU until their "
        "writers wait for it (bench.tracedrun.collector_off); by default it runs anywhere",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.collector_cpu is not None:
        _pin(args.collector_cpu)  # the repetitions' processes inherit it
    if args.one:
        spec = json.loads(args.one)
        apart = spec.get("apart", False) or args.collector_apart
        one = one_repetition(spec["rounds"], spec["traced_first"], apart)
        print(json.dumps(one))
        return 0
    table = compare(args.reps, args.budget, args.collector_apart)
    print_comparison(table, [work.name for work in PINNED])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
