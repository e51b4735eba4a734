"""A real `pipescope serve` on a free port for the end-to-end workloads, and its REST calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecore.runprocs import stat_fields

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = frozenset({"completed", "failed", "stopped", "timeout", "deadlock", "killed"})


@dataclass(frozen=True)
class Server:
    """A running server: its base URL, its process id and its log file."""

    url: str
    pid: int
    log: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"

    def rss_kib(self) -> int:
        """The server process's resident set (VmRSS) in KiB."""
        return _status_kib(self.pid, "VmRSS")

    def collector_rss_kib(self) -> int:
        """The resident set (VmRSS, KiB) of the server's largest collector process: the
        busy run's, not the spares started ahead of the next runs (about 18 MiB each)."""
        largest = 0
        for entry in Path("/proc").iterdir():
            fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
            if fields is None or int(fields[1]) != self.pid:
                continue
            try:
                if b"pipecore.collectmain" in (entry / "cmdline").read_bytes():
                    largest = max(largest, _status_kib(int(entry.name), "VmRSS"))
            except (OSError, ValueError):
                continue
        return largest

    def peak_kib(self) -> int:
        """The server process's peak resident set (VmHWM) in KiB."""
        return _status_kib(self.pid, "VmHWM")

    def request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            log = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{method} {path}: expected success, got {exc.code} {exc.read()!r}; log:\n{log}"
            ) from None

    def start_run(self, scenario: str, params: dict[str, Any], method: str = "forkserver") -> str:
        summary = self.request(
            "POST", "/api/runs", {"scenario": scenario, "params": params, "start_method": method}
        )
        run_id: str = summary["id"]
        return run_id

    def settle(self, quiet: float = 0.2, timeout: float = 15.0) -> float:
        """Wait until the server and every process under it used under 5% of a CPU over
        `quiet` seconds (the spare processes it started are ready, a run in step mode
        waits), at most `timeout` seconds; the seconds waited. Both arms of a comparison
        then start from the same quiet machine, whatever their set-up cost before."""
        started = time.monotonic()
        before = _tree_cpu_s(self.pid)
        while time.monotonic() - started < timeout:
            time.sleep(quiet)
            now = _tree_cpu_s(self.pid)
            if now - before < 0.05 * quiet:
                break
            before = now
        return time.monotonic() - started

    def wait_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll the run's summary until it reaches a terminal state."""
        deadline = time.monotonic() + timeout
        while True:
            summary: dict[str, Any] = self.request("GET", f"/api/runs/{run_id}")
            if summary["state"] in TERMINAL:
                return summary
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected run {run_id} to end within {timeout}s: {summary}")
            time.sleep(0.1)


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user and system) used so far by `root` and every process under it."""
    stats: dict[int, list[bytes]] = {}
    for entry in Path("/proc").iterdir():
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            stats[int(entry.name)] = fields
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            ticks += int(stats[pid][11]) + int(stats[pid][12])
        todo += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"expected {field} in /proc/{pid}/status, found none")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(
    max_run_seconds: float = 900.0,
    deadlock_seconds: float = 1.0,
    ws_compression: bool | None = None,
) -> Iterator[Server]:
    """Start `pipescope serve` with a temporary database; stop it and remove it afterwards.

    `ws_compression` sets permessage-deflate on or off (None: the server's default).
    """
    with tempfile.TemporaryDirectory(prefix="pipescope-bench-") as tmp:
        port = _free_port()
        log = Path(tmp) / "server.log"
        command = [
            sys.executable, "-m", "app.cli", "serve",
            "--port", str(port),
            "--db", str(Path(tmp) / "bench.sqlite3"),
            "--max-run-seconds", str(max_run_seconds),
            "--deadlock-seconds", str(deadlock_seconds),
        ]  # fmt: skip
        if ws_compression is not None:
            command += ["--ws-compression", "true" if ws_compression else "false"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Server(f"http://127.0.0.1:{port}", proc.pid, log)
        try:
            _wait_healthy(server, proc)
            yield server
        finally:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown tears the runs down
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_healthy(server: Server, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            server.request("GET", "/healthz")
            return
        except OSError:
            time.sleep(0.05)
    log = server.log.read_text(errors="replace")
    raise RuntimeError(f"expected the server to answer /healthz within 30 s; its log:\n{log}")
