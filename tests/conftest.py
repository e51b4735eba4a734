"""Shared fixtures: a real `pipescope serve` in a subprocess on a free port."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Uvicorn running on (http://\S+)")


@dataclass
class ServerProcess:
    """A running `pipescope serve`: its base URL, its process and its log."""

    url: str
    process: "subprocess.Popen[bytes]"
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Stop the server as an operator would (SIGTERM); return its exit code."""
        return _stop(self.process)


@contextmanager
def serve_pipescope(
    env: Mapping[str, str] | None = None, *, startup_timeout: float = 30.0
) -> Iterator[ServerProcess]:
    """Start `pipescope serve --port 0`, wait until /healthz answers, stop it on exit.

    `env` adds PIPESCOPE_* variables. The port is the one the kernel picked, read from the
    server's log, so parallel servers never race for a port. The log is printed when the
    server does not come up, and at teardown (pytest shows it for failed tests).
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESCOPE_")}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    with tempfile.TemporaryDirectory(prefix="pipescope-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        full_env.setdefault("PIPESCOPE_DB", str(Path(tmp) / "runs.sqlite3"))
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
                cwd=ROOT,
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess("", process, log_path)
        try:
            server.url = _wait_until_serving(server, startup_timeout)
        except BaseException:
            _stop(process)
            print(f"--- pipescope serve log ---\n{server.log()}")
            raise
        try:
            yield server
        finally:
            _stop(process)
            print(f"--- pipescope serve log ---\n{server.log()}")


def _wait_until_serving(server: ServerProcess, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"pipescope serve exited with code {server.process.returncode}")
        if url is None:
            found = LISTENING.search(server.log())
            url = found.group(1) if found else None
        if url is not None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.05)
    raise TimeoutError(f"pipescope serve did not answer /healthz within {timeout} s")


def _stop(process: "subprocess.Popen[bytes]") -> int:
    if process.poll() is None:
        # SIGTERM lets the lifespan stop every run and remove its files.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start servers with extra PIPESCOPE_* variables: `start_server({"PIPESCOPE_TOKEN": "t"})`.

    Every server started is stopped when the test ends.
    """
    with ExitStack() as stack:

        def start(env: Mapping[str, str] | None = None) -> ServerProcess:
            return stack.enter_context(serve_pipescope(env))

        yield start


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """One server with the default settings, shared by the session; yields its base URL."""
    with serve_pipescope() as server:
        yield server.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the
    main thread for the rest of the session, where asyncio.run() cannot start another."""
    items.sort(key=lambda item: "e2e" in item.path.parts)
