"""`pipescope trace`: a user's program traced into a file, or live into a real dashboard."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartServer
from tests.integration.tracing import (
    METHODS,
    ROOT,
    SITES_PROGRAM,
    STREAMING,
    events_of,
    messages,
    normalised,
    trace_command,
    traced_to,
    untraced,
)
from tests.integration.wsclient import follow_more, receive_until, viewer


@pytest.mark.parametrize("method", METHODS)
def test_a_traced_program_plays_live_in_the_dashboard(live_server: str, method: str) -> None:
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        tracer = subprocess.Popen(
            trace_command("--server", live_server, method=method),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            announced = STREAMING.match(tracer.stderr.readline().strip())
            assert announced, "the tracer did not announce its run"
            run_id = announced.group(1)
            ws.send(json.dumps({"type": "subscribe", "run": run_id}))
            snapshot = receive_until(ws, "snapshot")
            _, events = follow_more(ws, run_id, list(snapshot["events"]))
            out, err = tracer.communicate(timeout=60)
        finally:
            tracer.kill()
            tracer.wait()

    plain = untraced("pingpong.py", method)
    assert tracer.returncode == plain.returncode == 0, err
    assert normalised(out) == normalised(plain.stdout)
    assert snapshot["run"]["title"] == {"en": "pingpong.py", "zh": "pingpong.py"}
    assert snapshot["run"]["scenario"] == "trace"

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    sends, recvs = messages(events)
    # proc1's frame is received first, then proc2's answer; each receive follows the send it
    # took (FIFO per direction) and carries its `match` and the same hash.
    assert len(sends) == len(recvs) == 2
    assert [e["preview"] for e in recvs] == ["'proc1'", "'proc2'"]
    by_seq = {e["seq"]: e for e in sends}
    assert [by_seq[e["match"]]["preview"] for e in recvs] == ["'proc1'", "'proc2'"]
    assert [e["hash"] for e in recvs] == [by_seq[e["match"]]["hash"] for e in recvs]
    assert all(e["match"] < e["seq"] for e in recvs)
    assert [e["end"] for e in recvs] == ["b", "a"]  # proc2 holds end b, proc1 end a
    printed = sorted(e["text"] for e in events if e["kind"] == "output")
    assert normalised("\n".join(printed)) == normalised(out)
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "completed"

    # What the viewer saw is the record: listed, served, exported.
    assert httpx.get(f"{live_server}/api/runs/{run_id}/events").json() == events
    listed = {run["id"]: run for run in httpx.get(f"{live_server}/api/runs").json()}
    assert listed[run_id]["state"] == "completed"
    assert listed[run_id]["events"] == len(events)
    exported = httpx.get(f"{live_server}/api/runs/{run_id}/export").text.splitlines()
    assert [json.loads(line) for line in exported] == events
    refused = httpx.post(f"{live_server}/api/runs/{run_id}/stop")
    assert refused.status_code == 409 and "running elsewhere" in refused.json()["detail"]


def test_the_programs_exit_status_passes_through(live_server: str) -> None:
    done = subprocess.run(
        trace_command("--server", live_server, program="pipeline.py", method="spawn"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "sum of squares 1..5 = 55\n"
    announced = STREAMING.match(done.stderr.splitlines()[0])
    assert announced, done.stderr
    run = httpx.get(f"{live_server}/api/runs/{announced.group(1)}").json()
    assert run["state"] == "failed"
    assert run["message"] == "pipeline.py exited with status 3"


def test_a_server_that_cannot_be_reached_is_one_line_and_the_program_runs(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    output = tmp_path / "run.jsonl"
    done = subprocess.run(
        trace_command("--server", f"http://127.0.0.1:{closed_port}", "-o", str(output)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0
    assert normalised(done.stdout) == normalised(untraced("pingpong.py", "fork").stdout)
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"pipescope trace: cannot reach http://127.0.0.1:{closed_port}: ")
    assert lines[0].endswith(f"running the program to {output} only")
    assert lines[1:] == [f"pipescope trace: {len(output.read_text().splitlines())} events "
                         f"written to {output}"]  # fmt: skip
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert events[-1]["state"] == "completed"


def test_a_wrong_token_is_refused_in_one_line(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_TOKEN": "s3cret"})
    done = subprocess.run(
        trace_command("--server", server.url, "--token", "wrong"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"pipescope trace: {server.url} refused the connection (HTTP 403): check --token; "
        "running the program without recording it"
    ]
    accepted = subprocess.run(
        trace_command("--server", server.url, "--token", "s3cret"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert accepted.returncode == 0 and STREAMING.match(accepted.stderr.splitlines()[0])


def test_trace_writes_json_lines_locally(tmp_path: Path) -> None:
    output = tmp_path / "pingpong.jsonl"
    done = subprocess.run(
        trace_command("-o", str(output), "--name", "my pingpong", method="forkserver"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert normalised(done.stdout) == normalised(untraced("pingpong.py", "forkserver").stdout)
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert done.stderr == f"pipescope trace: {len(events)} events written to {output}\n"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["message"] == "tracing my pingpong"
    sends, recvs = messages(events)
    assert [e["match"] for e in recvs] == [e["seq"] for e in sends]
    assert events[-1]["state"] == "completed"


THREADED_PROGRAM = """
import threading
from multiprocessing import Pipe

def echo(conn, rounds):
    for _ in range(rounds):
        conn.send(conn.recv())

if __name__ == "__main__":
    a, b = Pipe()
    thread = threading.Thread(target=echo, args=(b, 500))
    thread.start()
    for n in range(500):
        a.send(n)
        assert a.recv() == n
    thread.join()
    print("echoed 500")
"""


def test_threads_of_one_traced_process_talk_over_a_pipe(tmp_path: Path) -> None:
    program = tmp_path / "threads.py"
    program.write_text(THREADED_PROGRAM)
    output = tmp_path / "threads.jsonl"
    done, events = traced_to(output, [sys.executable, str(program)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echoed 500\n"
    # One process sends and receives on both ends: each receive is matched, FIFO per
    # direction, to the send it took (equal hashes), with no corruption or other verdict.
    sends, recvs = messages(events)
    assert len(sends) == len(recvs) == 1000
    assert len({e["pid"] for e in sends + recvs}) == 1
    by_seq = {e["seq"]: e for e in sends}
    for end in ("a", "b"):
        taken = [e for e in recvs if e["end"] == end]
        assert [e["match"] for e in taken] == [e["seq"] for e in sends if e["end"] != end]
        assert all(by_seq[e["match"]]["hash"] == e["hash"] for e in taken)
    assert not [e for e in events if e["kind"] == "verdict"]
    assert events[-1]["state"] == "completed"


QUEUE_DEADLOCK_PROGRAM = """
import multiprocessing as mp

def polite(conn, ready, name):
    ready.put(name)  # starts this process's queue feeder thread, idle from then on
    conn.recv()  # waits for the other side to speak first, as the other side does

if __name__ == "__main__":
    mp.set_start_method("fork")
    ready = mp.Queue()
    a, b = mp.Pipe()
    workers = [mp.Process(target=polite, args=(end, ready, name), name=name)
               for end, name in ((a, "left"), (b, "right"))]
    for worker in workers:
        worker.start()
    print(sorted(ready.get(timeout=30) for _ in workers), flush=True)
    workers[0].join(6)  # long past the deadlock's second of silence
    for worker in workers:
        worker.terminate()
        worker.join()
"""


def test_a_deadlock_is_told_in_processes_whose_queue_feeder_thread_idles(tmp_path: Path) -> None:
    # Each worker's Queue put leaves a feeder thread alive: a second thread, which used to
    # keep the wait from counting as a deadlock although it can end no wait.
    program = tmp_path / "queue_deadlock.py"
    program.write_text(QUEUE_DEADLOCK_PROGRAM)
    done, events = traced_to(tmp_path / "events.jsonl", [sys.executable, str(program)])
    assert done.stdout == "['left', 'right']\n", done.stderr
    helpers = {e["process"]: e["helpers"] for e in events if e["kind"] == "thread"}
    assert helpers == {"left": 1, "right": 1}
    verdicts = [e for e in events if e["kind"] == "verdict" and e["verdict"] == "deadlock"]
    assert len(verdicts) == 1, [e for e in events if e["kind"] == "verdict"]
    cycle = verdicts[0]["cycle"]
    assert sorted((w["process"], w["op"]) for w in cycle) == [("left", "recv"), ("right", "recv")]


def test_trace_without_a_command_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "--"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "expected a command after --, got nothing" in done.stderr


WAITING_PROGRAM = """
import multiprocessing, os, sys, time
if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    a.send("before")
    print("got", b.recv(), flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    a.send("after")
    print("got", b.recv(), flush=True)
"""


def test_a_server_lost_mid_run_leaves_the_program_running_and_its_record_replayable(
    start_server: StartServer, tmp_path: Path
) -> None:
    env = {"PIPESCOPE_DB": str(tmp_path / "runs.sqlite3")}
    first = start_server(env)
    program, go_on = tmp_path / "waiting.py", tmp_path / "go-on"
    program.write_text(WAITING_PROGRAM)
    tracer = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trace", "--server", first.url, "--",
         sys.executable, str(program), str(go_on)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tracer.stderr is not None and tracer.stdout is not None
        announced = STREAMING.match(tracer.stderr.readline().strip())
        assert announced
        run_id = announced.group(1)
        assert tracer.stdout.readline() == "got before\n"
        deadline = time.monotonic() + 30
        while not any(e.get("text") == "got before" for e in events_of(first.url, run_id)):
            assert time.monotonic() < deadline, "the first output never reached the server"
            time.sleep(0.05)
        first.stop()
        go_on.touch()
        out, err = tracer.communicate(timeout=60)
    finally:
        tracer.kill()
        tracer.wait()
    assert tracer.returncode == 0
    assert out == "got after\n"
    lost = [line for line in err.splitlines() if "lost the connection" in line]
    assert len(lost) == 1 and lost[0].endswith("the program runs on"), err

    second = start_server(env)
    record = httpx.get(f"{second.url}/api/runs/{run_id}").json()
    assert record["state"] == "failed"
    assert record["title"] == {"en": "waiting.py", "zh": "waiting.py"}
    events = events_of(second.url, run_id)
    assert "got before" in [e.get("text") for e in events]
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "failed"
    with viewer(second.url) as ws:
        receive_until(ws, "hello")
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        assert receive_until(ws, "snapshot")["events"] == events


def test_a_program_that_cannot_start_ends_its_run_failed(live_server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "--server", live_server, "--",
         "/nonexistent/python", "prog.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 127
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("pipescope trace: error: cannot run '/nonexistent/python'")
    announced = STREAMING.match(lines[0])
    assert announced, done.stderr
    run_id = announced.group(1)
    deadline = time.monotonic() + 30
    while (run := httpx.get(f"{live_server}/api/runs/{run_id}").json())["state"] != "failed":
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    assert run["message"] == "disconnected: the tracer left before the program ended"


MARKING_PROGRAM = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
Path(sys.argv[1]).touch()
"""


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (["-o", "{tmp}/nonexistent/x.jsonl"], 2,
         "cannot write the events to {tmp}/nonexistent/x.jsonl: No such file or directory"),
        (["-o", "{tmp}"], 2, "cannot write the events to {tmp}: Is a directory"),
        (["--server", "http://[::1"], 2, "--server: expected a server URL like "
         "http://127.0.0.1:8000, got 'http://[::1' (Invalid IPv6 URL)"),
        (["--server", "ftp://host"], 2, "--server: expected a server URL like "
         "http://127.0.0.1:8000, got 'ftp://host'"),
    ],
)  # fmt: skip
def test_a_bad_argument_is_one_line_and_the_program_does_not_run(
    tmp_path: Path, options: list[str], code: int, message: str
) -> None:
    program, ran = tmp_path / "marking.py", tmp_path / "ran"
    program.write_text(MARKING_PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", *(o.format(tmp=tmp_path) for o in options),
         "--", sys.executable, str(program), str(ran)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == code
    assert done.stderr == f"pipescope trace: error: {message.format(tmp=tmp_path)}\n"
    assert not ran.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marking.py"]


def test_a_program_that_cannot_be_run_exits_126_as_in_a_shell(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\necho hello\n")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "--", str(program)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    plain = subprocess.run(["sh", "-c", '"$0"', str(program)], capture_output=True, timeout=60)
    assert done.returncode == plain.returncode == 126
    assert (
        done.stderr == f"pipescope trace: error: cannot run {str(program)!r}: Permission denied\n"
    )
    # No events file is left for a program that never ran.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-executable"]


def test_a_full_disk_stops_the_events_file_not_the_program(tmp_path: Path) -> None:
    program, ran = tmp_path / "marking.py", tmp_path / "ran"
    program.write_text(MARKING_PROGRAM + "print('done')\n")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "-o", "/dev/full",
         "--", sys.executable, str(program), str(ran)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "done\n" and ran.exists()
    first, last = done.stderr.splitlines()
    assert first == (
        "pipescope trace: cannot write to /dev/full: No space left on device, after 0 events; "
        "the program runs on"
    )
    assert re.fullmatch(
        r"pipescope trace: 0 of \d+ events written to /dev/full \(No space left on device\)", last
    )


def test_a_pipe_event_names_the_users_line_as_its_site(tmp_path: Path) -> None:
    program, output = tmp_path / "sites.py", tmp_path / "sites.jsonl"
    program.write_text(SITES_PROGRAM)
    done, events = traced_to(output, [sys.executable, str(program)], timeout=60)
    assert done.returncode == 0, done.stderr
    # Pipe(), the context's Pipe() and `from multiprocessing import Pipe`: each the
    # user's line, not the tracer's nor multiprocessing's.
    assert [e["site"] for e in events if e["kind"] == "pipe"] == [
        f"{program}:6",
        f"{program}:7",
        f"{program}:8",
    ]
    sends = [e for e in events if e["kind"] == "call" and e["op"] == "send"]
    assert {e["site"] for e in sends} == {f"{program}:9"}


EXITING_PROGRAM = """
import multiprocessing, os, sys


def child(end):
    end.send(1)


if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(b,))
    p.start()
    a.recv()
    p.join()
    how = sys.argv[1]
    if how == "raise":
        raise SystemExit(4)
    if how == "true":
        sys.exit(True)
    if how == "_exit":
        os._exit(5)
    os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize(("how", "code"), [("raise", 4), ("true", 1), ("_exit", 5), ("kill", -9)])
def test_the_programs_exit_event_carries_its_real_exit_status(
    tmp_path: Path, how: str, code: int
) -> None:
    program, output = tmp_path / "exiting.py", tmp_path / "exiting.jsonl"
    program.write_text(EXITING_PROGRAM)
    plain = subprocess.run([sys.executable, str(program), how], timeout=60)
    assert plain.returncode == code
    _, events = traced_to(output, [sys.executable, str(program), how])
    exits = [e for e in events if e["kind"] == "process" and e["op"] == "exit"]
    main = [e for e in exits if e["process"] == "MainProcess"]
    # Before, `raise SystemExit(4)` was recorded as 0, sys.exit(True) as true, and
    # os._exit(5) as a process killed (exitcode null and a `killed` verdict).
    assert [(e["exitcode"], "killed" in e) for e in main] == [(code, False)]
    killed = [e["message"] for e in events if e.get("verdict") == "killed"]
    assert killed == ([f"MainProcess (pid {main[0]['pid']}) was killed by signal 9 (SIGKILL)"]
                      if code < 0 else [])  # fmt: skip


def test_a_pipe_whose_size_the_system_cannot_tell_has_no_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fcntl

    from pipecore.traced import _capacity

    r, w = os.pipe()
    try:
        assert isinstance(_capacity(w, "os.pipe"), int)
        monkeypatch.delattr(fcntl, "F_GETPIPE_SZ")  # Python before 3.10
        assert _capacity(w, "os.pipe") is None
        assert _capacity(r, "socketpair") is None  # not a socket
    finally:
        os.close(r)
        os.close(w)
