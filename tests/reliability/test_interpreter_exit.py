"""Interpreter exit: a program that leaves with runs going ends every process they started."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.reliability.conftest import figure

ROOT = Path(__file__).resolve().parents[2]
PR_SET_CHILD_SUBREAPER = 36

# A program that starts a long run, waits for its workers' first calls, then returns from
# its last line: only the interpreter's exit (RunManager's atexit hook) can end the run.
PROGRAM = textwrap.dedent(
    """
    import threading
    from pipecore.runs import RunManager

    runs = RunManager()
    called = threading.Event()

    def seen(batch):
        if any(e["kind"] == "call" and e["process"] == "consumer" for e in batch):
            called.set()

    run = runs.start("backpressure", {"messages": 1000, "delay": 2.0})
    run.subscribe(seen)
    if not called.wait(60):
        raise SystemExit("expected the consumer's first call within 60 s")
    print(run.id, flush=True)
    """
)

# Runs the program as the child of a subreaper, so every process the program leaves
# behind becomes this guardian's child: it reaps them for up to `GRACE` seconds, then
# prints the command lines of those still alive and kills them, and those they leave.
GUARDIAN = textwrap.dedent(
    """
    import ctypes, os, subprocess, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl({subreaper}, 1, 0, 0, 0) != 0:
        raise SystemExit("expected prctl(PR_SET_CHILD_SUBREAPER) to work")
    program = subprocess.run([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE)
    print("exit", program.returncode, program.stdout.decode().strip(), flush=True)
    deadline = time.monotonic() + {grace}
    killed = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # no child left
        if pid:
            continue
        if time.monotonic() > deadline:
            # Each one still here, and then each one the killed leave to this subreaper.
            for child in [p for p in os.listdir("/proc") if p.isdigit()]:
                try:
                    stat = open(f"/proc/{{child}}/stat").read().rsplit(")", 1)[1].split()
                    line = open(f"/proc/{{child}}/cmdline").read().replace("\\0", " ")
                except OSError:
                    continue
                if stat[1] == str(os.getpid()) and child not in killed:
                    killed.add(child)
                    print("left", child, line, flush=True)
                    os.kill(int(child), 9)
        time.sleep(0.02)
    """
)
GRACE = 15.0


def test_a_program_that_exits_with_a_run_going_leaves_nothing() -> None:
    # A short temporary directory of its own, so that the runs' directories fit in it
    # (runmarks.temp_dir) and what the program leaves there is seen.
    tmp_path = Path(tempfile.mkdtemp(prefix="pse-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    started = time.monotonic()
    guardian = subprocess.run(
        [
            sys.executable,
            "-c",
            GUARDIAN.format(subreaper=PR_SET_CHILD_SUBREAPER, grace=GRACE),
            PROGRAM,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = guardian.stdout.splitlines()
    assert guardian.returncode == 0, guardian.stderr
    assert lines and lines[0].startswith("exit 0 "), (lines, guardian.stderr)
    run_id = lines[0].split()[2]
    left = [line for line in lines[1:] if line.startswith("left")]
    assert left == [], f"processes of the run still alive {GRACE:.0f} s after the exit: {left}"
    assert not os.path.exists(f"/dev/shm/pipescope-{run_id}"), "the run's directory was left"
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    tmp_path.rmdir()
    figure(
        "interpreter exit with a run going",
        f"0 processes left, run directory removed; {time.monotonic() - started:.1f} s",
    )
