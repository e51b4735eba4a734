"""The `pipescope` command: serve's help and option checks, serve itself, and run's exit codes."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.settings import SETTINGS
from app.store import Store
from tests.conftest import StartServer
from tests.integration.conftest import MakeClient, wait_for_state

ROOT = Path(__file__).resolve().parents[2]


def test_serve_help_lists_every_setting_with_its_variable_and_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in ("--host", "--port", "--reload"):
        assert option in text
    for setting in SETTINGS:
        assert setting.option in text, setting.name
        assert f"env {setting.env}" in text, setting.name
        assert " ".join(setting.help.split()) in text, setting.name


def test_a_bad_option_is_refused_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "eighty"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pipescope serve: error: argument --port:")
    assert "expected an integer from 0 to 65535, got 'eighty'" in err


def test_a_bad_environment_variable_is_refused_before_serving(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPESCOPE_MAX_RUNS", "many")
    assert main(["serve"]) == 2
    assert "PIPESCOPE_MAX_RUNS (--max-runs): expected an integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace-everything"], "pipescope: error: argument COMMAND: invalid choice"),
        ([], "the following arguments are required: COMMAND (see pipescope --help)"),
        (["run"], "pipescope run: error: the following arguments are required: scenario"),
        (["run", "ping-pong", "--format", "xml"], "invalid choice: 'xml'"),
        (["run", "ping-pong", "--start-method", "vfork"], "invalid choice: 'vfork'"),
        (["run", "ping-pong", "--timeout", "soon"], "invalid float value: 'soon'"),
        (["export"], "pipescope export: error: the following arguments are required: run"),
        (["run", "ping-pong", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_serve_answers_on_the_port_the_kernel_picked(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_MAX_RUNS": "2"})
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert "Uvicorn running on" in server.log()


def test_stopping_the_server_tears_down_its_runs(start_server: StartServer) -> None:
    server = start_server()
    # Step mode holds the run at its first traced call, so it is alive when the server stops.
    response = httpx.post(
        f"{server.url}/api/runs", json={"scenario": "ping-pong", "step_mode": True}
    )
    run_id = response.json()["id"]
    deadline = time.monotonic() + 30
    pids: list[int] = []
    while not pids:
        assert time.monotonic() < deadline, "the run's processes never announced themselves"
        events = httpx.get(f"{server.url}/api/runs/{run_id}/events").json()
        pids = [e["pid"] for e in events if e["kind"] == "process" and e["op"] == "start"]
        time.sleep(0.05)
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)

    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert server.stop() in (0, -signal.SIGTERM)
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert not Path(f"/dev/shm/pipescope-{run_id}").exists()
    assert "Application shutdown complete" in server.log()


# The console command the package installs beside this interpreter (its code is app.cli:main).
PIPESCOPE = Path(sys.executable).with_name("pipescope")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(PIPESCOPE)] if PIPESCOPE.exists() else [sys.executable, "-m", "app.cli"]
    return subprocess.run(
        [*command, "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def jsonl_events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The events a `--format jsonl` run printed: one protocol event per line, seq 1, 2, …"""
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), result.stdout
    return events


def test_run_prints_the_scenario_and_exits_0_when_it_completes() -> None:
    result = run_cli("ping-pong")
    assert result.returncode == 0, result.stderr
    assert "收到 proc1" in result.stdout and "收到 proc2" in result.stdout


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_run_ping_pong_jsonl_shows_four_messages_fifo_and_the_two_printed_lines(
    method: str,
) -> None:
    result = run_cli("ping-pong", "--format", "jsonl", "--start-method", method)
    assert result.returncode == 0, result.stderr
    events = jsonl_events(result)
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "completed"
    messages = [
        e
        for e in events
        if e["kind"] == "call" and e["op"] in ("send", "recv") and e["phase"] == "end"
    ]
    # proc1 sends, proc2 receives, then answers, and proc1 receives: a receive never comes
    # before the end of the send it took (docs/protocol.md), so this is the stream's order.
    assert [(e["process"], e["op"], e["preview"]) for e in messages] == [
        ("Process-1", "send", "'proc1'"),
        ("Process-2", "recv", "'proc1'"),
        ("Process-2", "send", "'proc2'"),
        ("Process-1", "recv", "'proc2'"),
    ]
    for sent, got in (messages[0:2], messages[2:4]):
        assert got["match"] == sent["seq"]
        assert got["hash"] == sent["hash"] and got["nbytes"] == sent["nbytes"]
        assert got["pipe"] == sent["pipe"] and {got["end"], sent["end"]} == {"a", "b"}
    main_pid = next(e["pid"] for e in events if e.get("process") == "MainProcess")
    lines = [e["text"] for e in events if e["kind"] == "output"]
    # Python 3.11's format of the classic example (parent= names the process that started it).
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"进程proc2\(<Process name='Process-2' parent={main_pid} started>\)收到 proc1", lines[0]
    ), lines
    assert re.fullmatch(
        rf"进程proc1\(<Process name='Process-1' parent={main_pid} started>\)收到 proc2", lines[1]
    ), lines


def test_run_exits_1_when_a_worker_was_killed() -> None:
    result = run_cli("eof", "--format", "jsonl", "--param", "kill_after=0.05")
    assert result.returncode == 1, result.stderr
    last = jsonl_events(result)[-1]
    assert last["kind"] == "run" and last["state"] == "killed", last
    assert last["reason"]["key"] == "worker_killed"


def test_run_exits_2_for_an_unknown_scenario() -> None:
    result = run_cli("ping-ping")
    assert result.returncode == 2
    assert "ping-ping" in result.stderr


def test_export_writes_a_recorded_run(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.sqlite3")
    client = make_client(db=db)
    run_id = client.post("/api/runs", json={"scenario": "ping-pong"}).json()["id"]
    assert wait_for_state(client, run_id)["state"] == "completed"
    events = client.get(f"/api/runs/{run_id}/events").json()
    client.__exit__(None, None, None)  # the server stops: its record is complete on disk

    assert main(["export", run_id, "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == events

    trace_file = tmp_path / "trace.json"
    assert main(["export", run_id, "--db", db, "--format", "chrome", "-o", str(trace_file)]) == 0
    assert json.loads(trace_file.read_text())["traceEvents"]

    assert main(["export", "r000000", "--db", db]) == 1
    assert f"unknown run 'r000000' in {db} (latest: {run_id})" in capsys.readouterr().err
    assert main(["export", run_id, "--db", str(tmp_path / "none.sqlite3")]) == 1
    assert "no record database at" in capsys.readouterr().err


@pytest.fixture
def record_db(tmp_path: Path) -> Path:
    """A record database holding run r1 (its summary and one event)."""
    db = tmp_path / "records" / "runs.sqlite3"
    store = Store(str(db))
    store.save_run({"id": "r1", "started": 1.0, "state": "completed"})
    store.append_events([{"run": "r1", "seq": 1, "kind": "run", "t": 1, "pid": 0,
                          "process": "pipescope", "state": "completed"}])  # fmt: skip
    store.flush()
    store.close()
    return db


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.out == "", captured
    return captured.err


@pytest.mark.parametrize(
    ("content", "got"),
    [
        (b"root:x:0:0:root:/root:/bin/bash\n" * 4, "got a file that is not SQLite"),
        (b"", "(tables runs, events, chunks), got an SQLite file with no tables"),
    ],
)
def test_export_reads_only_a_record_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, got: str
) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)
    assert main(["export", "r123", "--db", str(path)]) == 1
    err = one_line(capsys)
    assert err.startswith(
        f"pipescope export: error: expected a PipeScope record database at {path}"
    )
    assert got in err
    # Opened read-only: nothing written into it, nothing beside it.
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["other.db"]


def test_export_leaves_a_record_database_as_it_was(
    record_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = record_db.read_bytes()
    assert main(["export", "r1", "--db", str(record_db)]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [1]
    assert record_db.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["r1", "--db", ""], "expected a file path for --db, got ''"),
        (["r\udce9", "--db", "{db}"], r"expected a run id such as r7f3a2c, got 'r\udce9'"),
        (["r1", "--db", "{db}", "-o", "{tmp}/nonexistent/dir/o"], "No such file or directory"),
        (["r1", "--db", "{db}", "-o", "{tmp}"], "Is a directory"),
    ],
)
def test_export_refuses_a_bad_argument_in_one_line(
    record_db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    argv = [arg.format(db=record_db, tmp=tmp_path) for arg in argv]
    assert main(["export", *argv]) == 2
    err = one_line(capsys)
    assert err.startswith("pipescope export: error: ") and message in err, err


def test_export_to_a_full_disk_fails_in_one_line(
    record_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "r1", "--db", str(record_db), "-o", "/dev/full"]) == 1
    assert one_line(capsys) == (
        "pipescope export: error: cannot write /dev/full: No space left on device\n"
    )
