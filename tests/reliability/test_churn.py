"""Faults: runs started and stopped in churn: at once, mid-flight, timed out or left to finish."""

import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipecore.runs import RunManager, RunState
from tests.reliability.conftest import SEED, Leaks, figure

CHURN_CYCLES = 100
CHURN_SCENARIOS: list[tuple[str, dict[str, object]]] = [
    ("ping-pong", {}),
    ("pipeline", {}),
    ("fan-in", {}),
    ("lock-queue", {}),
    ("race", {}),
    ("custom", {"topology": "fan-in", "writers": 3, "rate": 0.0, "count": 1000}),
    ("poll", {}),
    ("backpressure", {"messages": 200}),
    ("deadlock", {"variant": "recv-recv"}),
]


def churn_once(manager: RunManager, cycle: int, rng: random.Random) -> str:
    """One cycle: a run stopped at once, stopped mid-flight, timed out, or left to finish."""
    method = ("forkserver", "spawn", "fork")[cycle % 3]
    action = ("stop at once", "stop mid-flight", "stop mid-flight", "finish", "time out")[cycle % 5]
    if action == "time out":
        run = manager.start("backpressure", {"delay": 0.5}, start_method=method, timeout=1.0)
    else:
        scenario, params = CHURN_SCENARIOS[cycle % len(CHURN_SCENARIOS)]
        run = manager.start(scenario, params, start_method=method)
        if action == "stop mid-flight":
            time.sleep(rng.uniform(0, 0.4))
        if action != "finish":
            run.stop()
    state = run.wait(30)
    assert state.terminal, f"{run.id} ({run.scenario}, {action}) still {state}"
    expected = {"time out": {RunState.TIMEOUT}, "finish": set(RunState) - {RunState.STOPPED}}
    allowed = expected.get(action, {RunState.STOPPED, RunState.COMPLETED, RunState.DEADLOCK})
    assert state in allowed, f"{run.id} ({run.scenario}, {action}): {state} {run.message}"
    assert not os.path.exists(run.run_dir), f"{run.run_dir} left after {action}"
    assert run.pgid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pgid, 0)
    return f"{action}: {state.value}"


def test_start_stop_churn_leaves_no_process_fd_or_shared_memory(leaks: Leaks) -> None:
    manager = RunManager(max_runs=4, max_run_seconds=30.0)
    # Warm up what the first run opens lazily and keeps (the collector's decoders).
    manager.start("ping-pong").wait(30)
    before = Leaks()
    rng = random.Random(SEED)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = Counter(
                pool.map(lambda c: churn_once(manager, c, random.Random(rng.random())),
                         range(CHURN_CYCLES))
            )  # fmt: skip
    finally:
        manager.shutdown()
    found = before.check(manager.list())
    figure(
        "start/stop churn",
        f"{CHURN_CYCLES} cycles in {time.monotonic() - started:.0f} s; outcomes "
        f"{dict(outcomes)}; leftover processes {found['processes']}, fds {found['fds']}, "
        f"/dev/shm entries {found['shm']}",
    )
    leaks.check()
