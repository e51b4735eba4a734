"""The `spares` setting: a server keeps that many spare main and collector processes, and
with none its runs still start (the slow way) and complete."""

import json
import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from pipecore import runmarks
from pipecore.spares import FILL_DELAY, SPARE_DELAY

from .conftest import TERMINAL, Leaks, wait_for

KINDS = {"pipecore.runmain": "main", "pipecore.collectmain": "collector"}
# Longer than any wait before a server starts a spare (its first refill, the one after a
# run took one), with room for a loaded machine.
QUIET = FILL_DELAY + SPARE_DELAY + 2.0


def spare_children(server: int | None = None) -> dict[str, int]:
    """How many spare processes of each kind are children of `server` (default: this one),
    from their command lines (`python -m pipecore.runmain --spare`, likewise collectmain)."""
    server = os.getpid() if server is None else server
    counts = {"main": 0, "collector": 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if stat[0] == b"Z" or int(stat[1]) != server:
            continue
        if len(argv) >= 4 and argv[1] == "-m" and argv[2] in KINDS and argv[3] == "--spare":
            counts[KINDS[argv[2]]] += 1
    return counts


def keeps(expected: dict[str, int], seconds: float, when: str) -> None:
    """Poll for `seconds` that this server's spare processes are `expected` throughout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert spare_children() == expected, when
        time.sleep(0.01)


def run_held_then_completed(client: TestClient) -> str:
    """Start a ping-pong run held at its first call; return the run marker its main
    process carries, then let it go and wait until it completed."""
    response = client.post("/api/runs", json={"scenario": "ping-pong", "step_mode": True})
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    owner = Path(f"/dev/shm/pipescope-{run_id}") / runmarks.OWNER_FILE
    wait_for(owner.exists, 30, "the run's main process started")
    mark = str(json.loads(owner.read_text())["mark"])
    assert client.post(f"/api/runs/{run_id}/step-mode", json={"on": False}).status_code == 200

    def state() -> str:
        return str(client.get(f"/api/runs/{run_id}").json()["state"])

    wait_for(lambda: state() in TERMINAL, 30, "the run ended")
    assert state() == "completed"
    return mark


def test_with_no_spares_a_server_keeps_none_and_its_runs_start_the_slow_way(
    leaks: Leaks,
) -> None:
    no_spares = {"main": 0, "collector": 0}
    with TestClient(create_app(Settings(db=":memory:", spares=0))) as client:
        keeps(no_spares, QUIET, "after the server started")
        mark = run_held_then_completed(client)
        # Its main process was started for it, with its own marker, not a spare's.
        assert not mark.startswith("spare."), mark
        keeps(no_spares, QUIET, "after a run")
    leaks.check()


def test_with_one_spare_a_server_keeps_exactly_one_of_each_kind(leaks: Leaks) -> None:
    one_each = {"main": 1, "collector": 1}
    with TestClient(create_app(Settings(db=":memory:", spares=1))) as client:
        wait_for(lambda: spare_children() == one_each, 30, "one spare of each kind")
        keeps(one_each, QUIET, "after the server started")
        mark = run_held_then_completed(client)
        assert mark.startswith(f"spare.{os.getpid()}."), "the run took the spare"
        # The taken one ended with its run; one new spare of each kind, no more.
        wait_for(lambda: spare_children() == one_each, 30, "the spares replaced")
        keeps(one_each, QUIET, "after a run")
    assert spare_children() == {"main": 0, "collector": 0}
    leaks.check()
