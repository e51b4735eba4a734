"""The real Dockerfile, built and run with docker or podman, serves runs over HTTP and ws."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]
LIVE = ("starting", "running")


def _answers(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _engine() -> str | None:
    """The first container engine whose daemon or runtime answers."""
    if _answers("docker", "info"):
        return "docker"
    if _answers("podman", "info"):
        return "podman"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _run(*cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class Container:
    """The running container: the engine that runs it, its name and its URL on the host."""

    engine: str
    name: str
    url: str

    def exec_python(self, code: str) -> str:
        """Run `code` with the image's python inside the container; its stdout."""
        done = _run(self.engine, "exec", self.name, "python", "-c", code, timeout=60)
        assert done.returncode == 0, f"{self.engine} exec failed:\n{done.stdout}{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    engine = _engine()
    if engine is None:
        if os.environ.get("CI"):
            pytest.fail("no container engine answers (docker info and podman info both failed)")
        pytest.skip("no container engine answers here: neither `docker info` nor `podman info`")
    tag = f"pipescope-test:{uuid.uuid4().hex[:8]}"
    # The builder stage gets a tag of its own so that removing it removes its layers
    # (gcc and the headers) too; the final build reuses them from the cache.
    builder_tag = f"{tag}-builder"
    name = f"pipescope-test-{uuid.uuid4().hex[:8]}"
    engine_args = ["--format", "docker"] if engine == "podman" else []
    port = _free_port()
    try:
        deadline = time.monotonic() + 900
        for target in (["--target", "builder", "-t", builder_tag], ["-t", tag]):
            left = max(1.0, deadline - time.monotonic())
            built = _run(engine, "build", *engine_args, *target, str(ROOT), timeout=left)
            assert built.returncode == 0, f"{engine} build failed:\n{built.stdout}\n{built.stderr}"
        started = _run(
            engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", tag, timeout=120
        )
        assert started.returncode == 0, f"{engine} run failed:\n{started.stderr}"
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(url + "/healthz")[0] == 200:
                    break
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                logs = _run(engine, "logs", name, timeout=30)
                pytest.fail(f"/healthz never answered; container log:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.25)
        yield Container(engine, name, url)
    finally:
        _run(engine, "rm", "-f", name, timeout=120)
        _run(engine, "rmi", "-f", tag, builder_tag, timeout=120)


@pytest.fixture(scope="module")
def container_url(container: Container) -> str:
    return container.url


def test_healthz_answers_from_the_host(container_url: str) -> None:
    status, body = _get(container_url + "/healthz")
    assert status == 200
    assert body["status"] == "ok"


async def _collect_run(ws_url: str, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "hello"
        await ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] in ("snapshot", "events"):
                events.extend(frame["events"])
            if any(e["kind"] == "run" and e["state"] not in LIVE for e in events):
                return events
    raise AssertionError(f"run {run_id} did not end within 60 s; got {len(events)} events")


def test_a_scenario_started_over_http_streams_its_events(container_url: str) -> None:
    status, run = _post(container_url + "/api/runs", {"scenario": "ping-pong"})
    assert status in (200, 201)
    ws_url = container_url.replace("http://", "ws://") + "/ws"
    events = asyncio.run(_collect_run(ws_url, run["id"]))
    states = [e["state"] for e in events if e["kind"] == "run"]
    assert states[-1] == "completed", states
    sends = [e for e in events if e["kind"] == "call" and e["op"] == "send" and e["phase"] == "end"]
    recvs = [e for e in events if e["kind"] == "call" and e["op"] == "recv" and e["phase"] == "end"]
    assert len(sends) == 2 and len(recvs) == 2
    assert [r["hash"] for r in recvs] == [s["hash"] for s in sends]
    lines = [e["text"] for e in events if e["kind"] == "output"]
    assert any("收到 proc1" in line for line in lines), lines
    assert any("收到 proc2" in line for line in lines), lines


def test_the_container_records_with_the_c_writer(container: Container) -> None:
    writer = container.exec_python("import pipecore.telemetry as t; print(t.WRITER)").strip()
    # What a run's processes import, in the image's environment (the server itself never
    # records, so it does not load the writer).
    assert writer == "c", f"expected pipecore.telemetry.WRITER == 'c' in the image, got {writer!r}"


def test_the_image_has_no_compiler(container: Container) -> None:
    found = container.exec_python(
        "import shutil; print(*(c for c in ('gcc', 'cc', 'c99', 'x86_64-linux-gnu-gcc',"
        " 'clang', 'ld') if shutil.which(c)))"
    ).split()
    assert found == [], f"expected no compiler or linker in the image, found {found}"
