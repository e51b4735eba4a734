"""Ping-pong and streaming workloads: the traced Pipe against the raw one, in one run."""

from __future__ import annotations

import multiprocessing
import os
import shutil
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
