"""Helpers of the `pipescope trace` tests: its command lines, and what a run recorded."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
METHODS = ["spawn", "forkserver", "fork"]
STREAMING = re.compile(r"^pipescope trace: streaming to \S+ as run (t[0-9a-f]+)$")
Event = dict[str, Any]


def trace_command(*options: str, program: str = "pingpong.py", method: str = "fork") -> list[str]:
    return [
        sys.executable, "-m", "app.cli", "trace", *options,
        "--", sys.executable, str(EXAMPLES / program), method,
    ]  # fmt: skip


def untraced(program: str, method: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES / program), method]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


def normalised(text: str) -> list[str]:
    # A Process repr names its parent's pid, which differs from one run to the next.
    return sorted(re.sub(r"parent=\d+", "parent=N", line) for line in text.splitlines())


def traced_to(
    output: Path, command: list[str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], list[Event]]:
    """`pipescope trace -o output -- command`, run to its end; what it did and its events."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(output), "--", *command],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done, [json.loads(line) for line in output.read_text().splitlines()]


def messages(events: list[Event]) -> tuple[list[Event], list[Event]]:
    ends = [e for e in events if e["kind"] == "call" and e["phase"] == "end"]
    return [e for e in ends if e["op"] == "send"], [e for e in ends if e["op"] == "recv"]


def events_of(base: str, run_id: str) -> list[Event]:
    response = httpx.get(f"{base}/api/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[Event] = response.json()
    return events


# Pipes made three ways (multiprocessing.Pipe, Pipe imported by name, a context's Pipe), one frame.
SITES_PROGRAM = """
import multiprocessing
from multiprocessing import Pipe

if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    c, d = Pipe(duplex=False)
    e, f = multiprocessing.get_context("spawn").Pipe()
    a.send("x")
    print(b.recv())
"""
