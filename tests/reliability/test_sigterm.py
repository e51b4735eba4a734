"""Faults: a busy server stopped by SIGTERM ends its workers, keeps its records and exits 0;
`pipescope run` stopped by a signal tears its run down."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.store import Store
from tests.conftest import serve_pipescope
from tests.reliability.conftest import (
    ROOT,
    TERMINAL,
    Leaks,
    alive,
    descendants,
    figure,
    wait_for,
)

BUSY = [
    {"scenario": "backpressure", "params": {"messages": 1000, "delay": 0.05}},
    {
        "scenario": "custom",
        "params": {"topology": "fan-in", "writers": 4, "rate": 0, "count": 1000},
    },
    {"scenario": "poll", "params": {"messages": 200}},
    {"scenario": "lock-queue", "start_method": "spawn"},
]


def test_sigterm_to_a_busy_server_ends_workers_keeps_records_and_exits_0(
    tmp_path: Path, leaks: Leaks
) -> None:
    db = tmp_path / "runs.sqlite3"
    with serve_pipescope({"PIPESCOPE_DB": str(db)}) as server:
        run_ids = []
        for body in BUSY:
            response = httpx.post(f"{server.url}/api/runs", json=body, timeout=30)
            assert response.status_code == 201, response.text
            run_ids.append(response.json()["id"])
        pids: set[int] = set()

        def workers_started() -> bool:
            pids.clear()
            for run_id in run_ids:
                events = httpx.get(f"{server.url}/api/runs/{run_id}/events", timeout=30).json()
                starts = [e["pid"] for e in events if e["kind"] == "process" and e["op"] == "start"]
                if len(starts) < 3:
                    return False
                pids.update(starts)
            return True

        wait_for(workers_started, 30, "every run's workers started")
        pids |= descendants(server.process.pid)  # the runs' main processes and helpers
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not any(alive(pid) for pid in pids), 2.0, "every worker gone")
        gone_after = time.monotonic() - signalled
        code = server.process.wait(20)
        log = server.log()
    assert code == 0, f"exit status {code}; log:\n{log[-2000:]}"
    assert "Application shutdown complete" in log
    # Read back through the store, whatever its tables look like.
    store = Store(str(db))
    try:
        stored = {summary["id"]: summary for summary in store.runs()}
        seqs = {run_id: [e["seq"] for e in store.iter_events(run_id)] for run_id in run_ids}
    finally:
        store.close()
    counts = {run_id: len(found) for run_id, found in seqs.items()}
    for run_id in run_ids:
        assert not os.path.exists(f"/dev/shm/pipescope-{run_id}"), run_id
        assert stored[run_id]["state"] in TERMINAL, stored[run_id]
        assert seqs[run_id] == list(range(1, stored[run_id]["events"] + 1)), run_id
    figure(
        "SIGTERM to a busy server",
        f"{len(run_ids)} runs, {len(pids)} processes gone {gone_after:.2f} s after the signal, "
        f"exit status {code}, {sum(counts.values())} events on disk",
    )
    leaks.check()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=str)
def test_a_signal_to_pipescope_run_tears_its_run_down_and_prints_the_end(
    signum: signal.Signals, leaks: Leaks
) -> None:
    argv = ["run", "poll", "--param", "messages=200", "--format", "jsonl", "--timeout", "60"]
    cli = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert cli.stdout is not None
    events = []
    workers: set[int] = set()
    try:
        # Until both workers have made a call: the run is in full swing.
        while len(workers) < 2:
            line = cli.stdout.readline()
            assert line, "the run ended before both workers called"
            events.append(json.loads(line))
            if events[-1]["kind"] == "call":
                workers.add(events[-1]["pid"])
        run_id = events[-1]["run"]
        pids = descendants(cli.pid) | workers  # the run's main process, collector, workers
        cli.send_signal(signum)
        # The rest through the same buffer readline() filled (communicate() would skip what
        # it holds); a command that does not end is killed, and the test fails below.
        watchdog = threading.Timer(30, cli.kill)
        watchdog.start()
        rest = cli.stdout.read()
        cli.stdout.close()
        watchdog.cancel()
        cli.wait(10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    events += [json.loads(line) for line in rest.splitlines()]
    assert cli.returncode == 1
    assert (events[-1]["kind"], events[-1]["state"]) == ("run", "stopped")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [pid for pid in pids if alive(pid)] == []
    assert not os.path.exists(f"/dev/shm/pipescope-{run_id}")
    leaks.check()


def test_pipescope_run_whose_reader_leaves_stops_its_run_quietly(leaks: Leaks) -> None:
    """`pipescope run … | head -2`: the run is stopped and torn down once its output has
    nowhere to go, and nothing is printed about the closed pipe."""
    argv = ["run", "poll", "--param", "messages=200", "--format", "jsonl", "--timeout", "60"]
    cli = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert cli.stdout is not None and cli.stderr is not None
    try:
        first = json.loads(cli.stdout.readline())
        cli.stdout.close()  # the reader leaves, as `head` does
        err = cli.stderr.read()
        cli.stderr.close()
        code = cli.wait(30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert (code, err) == (1, "")
    assert not os.path.exists(f"/dev/shm/pipescope-{first['run']}")
    leaks.check()
