"""`pipescope trace`: a user's program traced into a file, or live into a real dashboard."""

import ast
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import StartServer
from tests.integration.wsclient import follow_more, receive_until, viewer
from tests.reliability.conftest import alive

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
    for worker in workers:
        worker.join(6)  # long past the deadlock's second of silence
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


def events_of(base: str, run_id: str) -> list[Event]:
    response = httpx.get(f"{base}/api/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[Event] = response.json()
    return events


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


DYING_PROGRAM = """
import multiprocessing, os, signal, sys
if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    a.send("last words")
    print(b.recv(), flush=True)
    if sys.argv[1] == "interrupt":
        raise KeyboardInterrupt
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
"""


@pytest.mark.parametrize(
    ("how", "signum"),
    [("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("interrupt", signal.SIGINT)],
)
def test_a_program_killed_by_a_signal_kills_its_tracer_by_the_same_signal(
    tmp_path: Path, how: str, signum: int
) -> None:
    program, output = tmp_path / "dying.py", tmp_path / "dying.jsonl"
    program.write_text(DYING_PROGRAM)
    command = [sys.executable, str(program), how]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=60)
    done, events = traced_to(output, command, timeout=90)
    # Died of the signal (the shell's 128+N), as untraced: not exit status 256-N.
    assert done.returncode == plain.returncode == -signum, done.stderr
    assert done.stdout == plain.stdout == "last words\n"
    # Its records were written before it ended.
    assert done.stderr.endswith(f"pipescope trace: {len(events)} events written to {output}\n")
    assert events[-1]["state"] == "killed"
    assert events[-1]["reason"]["args"]["code"] == -signum


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


LINGERING_PROGRAM = """
import multiprocessing, os, sys, time
if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    a.send("ready")
    print(b.recv(), os.getpid(), os.environ["PIPESCOPE_TRACE_DIR"], flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
"""


def test_the_run_directory_of_a_killed_tracer_goes_at_the_next_trace(tmp_path: Path) -> None:
    program, go_on = tmp_path / "lingering.py", tmp_path / "go-on"
    program.write_text(LINGERING_PROGRAM)
    tracer = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(tmp_path / "out.jsonl"), "--",
         sys.executable, str(program), str(go_on)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert tracer.stdout is not None
        ready, pid, run_dir = tracer.stdout.readline().split()
        assert ready == "ready" and Path(run_dir).is_dir()
        tracer.kill()
        tracer.wait()
        # The program runs on (it is the user's): its directory stays while it does.
        again = [sys.executable, "-m", "app.cli", "trace", "-o", str(tmp_path / "again.jsonl"),
                 "--", sys.executable, "-c", "pass"]  # fmt: skip
        assert subprocess.run(again, cwd=ROOT, timeout=60).returncode == 0
        assert Path(f"/proc/{pid}").exists() and Path(run_dir).is_dir()
    finally:
        go_on.touch()
        tracer.kill()
        tracer.wait()
    deadline = time.monotonic() + 30
    # Re-parented, it may stay a zombie of whichever process took it: ended all the same.
    while alive(int(pid)):
        assert time.monotonic() < deadline, "the traced program did not end"
        time.sleep(0.02)
    assert subprocess.run(again, cwd=ROOT, timeout=60).returncode == 0
    assert not Path(run_dir).exists()


def test_a_program_whose_tracer_was_killed_runs_on_untraced(tmp_path: Path) -> None:
    # 20,000 round trips after the kill write far more than a 2 MiB ring holds: nobody
    # drains it any more, and the program must not wait for ever for room in it.
    program, go_on = tmp_path / "chatty.py", tmp_path / "go-on"
    program.write_text(
        LINGERING_PROGRAM + "    for i in range(20_000):\n        a.send(i)\n        b.recv()\n"
        "    print('finished', flush=True)\n"
    )
    tracer = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(tmp_path / "out.jsonl"), "--",
         sys.executable, str(program), str(go_on)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    pid = 0
    try:
        assert tracer.stdout is not None
        _ready, pid_text, _run_dir = tracer.stdout.readline().split()
        pid = int(pid_text)
        tracer.kill()
        tracer.wait()
        go_on.touch()
        # The program holds the pipe's write end: its next line comes, or EOF if it died.
        ended = ThreadPoolExecutor(1).submit(tracer.stdout.readline)
        assert ended.result(timeout=60).strip() == "finished"
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        tracer.kill()
        tracer.wait()


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


SITE_PROGRAM = """
import builtins, multiprocessing


def child(end):
    end.send("hi")


if __name__ == "__main__":
    print("user sitecustomize ran:", getattr(builtins, "USER_SITE", False))
    for name in ("tests", "bench", "boot"):
        try:
            __import__(name)
            print("import", name, "-> found")
        except ImportError:
            print("import", name, "-> ImportError")
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(b,))
    p.start()
    print(a.recv())
    p.join()
"""


def test_the_program_imports_what_it_would_untraced(tmp_path: Path) -> None:
    """The tracer's own sitecustomize runs the program's one after it, and nothing of this
    installation but pipecore (not its tests, bench, or boot module) joins the path."""
    (tmp_path / "userpath").mkdir()
    (tmp_path / "userpath" / "sitecustomize.py").write_text(
        "import builtins\nbuiltins.USER_SITE = True\n"
    )
    (tmp_path / "prog.py").write_text(SITE_PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "userpath")}
    program = [sys.executable, str(tmp_path / "prog.py")]
    plain = subprocess.run(
        program, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    # The installed command, so that this tree is not on the path the program inherits.
    pipescope = str(Path(sys.executable).parent / "pipescope")
    traced = subprocess.run(
        [pipescope, "trace", "-o", str(tmp_path / "out.jsonl"), "--", *program],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plain.stdout.splitlines()[:4] == [
        "user sitecustomize ran: True", "import tests -> ImportError",
        "import bench -> ImportError", "import boot -> ImportError",
    ]  # fmt: skip
    assert traced.stdout == plain.stdout, traced.stderr
    events = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len([e for e in events if e["kind"] == "call" and e["phase"] == "end"]) >= 2


def session_processes(sid: int) -> set[int]:
    """The live processes of session `sid`: a tracer started in a session of its own, its
    program's process group and whatever they started (unless it left the session)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            found.add(int(entry))
    return found


def kill_session(sid: int) -> None:
    for pid in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def line_of(stream: Any, timeout: float = 60) -> str:
    """The next line of a child's output, waited for at most `timeout` seconds."""
    pool = ThreadPoolExecutor(1)
    try:
        line: str = pool.submit(stream.readline).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)
    return line


# The signal goes ROUNDS times: the tracer's second copy of a signal reached the program
# unless the kernel had not delivered the first yet (then the two make one).
ROUNDS = 4
# A program's signals counted: `received()` tells those received so far, a byte each,
# even two in a row that Python's handler would see as one.
SIGNAL_COUNTER = f"""
import os, signal, time

ROUNDS = {ROUNDS}


def count_signals(*signums):
    for signum in signums:
        signal.signal(signum, lambda signum, frame: None)
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    got = bytearray()

    def received():
        try:
            got.extend(os.read(r, 64))
        except BlockingIOError:
            pass
        return got

    return received


def wait(seconds, until=lambda: False):
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.01)


def take_signals(received):
    for n in range(1, ROUNDS + 1):
        wait(60, lambda: len(received()) >= n)
        print("got", n, flush=True)
    wait(1)  # a second signal for the last, if one comes, comes now
    print("signals", *received(), flush=True)
"""
SIGNALLED_PROGRAM = (
    SIGNAL_COUNTER
    + """
import multiprocessing


def worker(end):
    try:
        end.send("listening")
        end.recv()
    except KeyboardInterrupt:
        print("worker interrupted", flush=True)


if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=worker, args=(b,))
    p.start()
    a.recv()
    received = count_signals(signal.SIGINT, signal.SIGTERM)
    print("ready", flush=True)
    take_signals(received)
    try:
        a.send("done")
    except OSError:
        pass
    p.join()
"""
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("to", ["group", "tracer"])
def test_a_signal_to_the_tracer_or_its_group_reaches_the_program_once(
    tmp_path: Path, signum: int, to: str
) -> None:
    """Ctrl-C or `kill -TERM -PGID` signal the tracer's process group: the program got the
    signal from the kernel and again from the tracer, which a handler saw twice. Now the
    program is a process group of its own, and the tracer passes the signal on once."""
    program = tmp_path / "signalled.py"
    program.write_text(SIGNALLED_PROGRAM)
    tracer = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(tmp_path / "out.jsonl"), "--",
         sys.executable, str(program)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    interrupted = False
    try:
        for n in range(ROUNDS):
            # Each signal once the program has the one before (the first once it is ready).
            while (line := line_of(tracer.stdout)) == "worker interrupted\n":
                interrupted = True
            assert line == (f"got {n}\n" if n else "ready\n")
            if to == "group":
                os.killpg(tracer.pid, signum)
            else:
                tracer.send_signal(signum)
        out, err = tracer.communicate(timeout=60)
    finally:
        kill_session(tracer.pid)
        tracer.wait()
    assert f"signals{f' {signum}' * ROUNDS}\n" in out, (out, err)
    if to == "group" and signum == signal.SIGINT:
        # Ctrl-C's signal reaches every process of the program, as untraced.
        assert interrupted or "worker interrupted\n" in out, (out, err)
    assert tracer.returncode == 0, err


TERMINAL_PROGRAM = (
    SIGNAL_COUNTER
    + """
import multiprocessing, sys

if __name__ == "__main__":
    a, b = multiprocessing.Pipe()
    print("hello", input("name? "), flush=True)
    print("hello", input("again? "), flush=True)
    a.send("ready")
    received = count_signals(signal.SIGINT)
    print(b.recv(), flush=True)
    take_signals(received)
    sys.exit(3)
"""
)

# A shell's job control, in short: the command is a job of its own, given the terminal's
# foreground; when it stops, the shell takes the terminal back, and `fg` (a line) gives
# it to the job again and continues it.
JOB_SHELL = """
import fcntl, os, signal, sys, termios

fcntl.ioctl(0, termios.TIOCSCTTY, 0)
JOB_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
for signum in JOB_SIGNALS:
    signal.signal(signum, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpid())
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    os.execv(sys.argv[1], sys.argv[1:])
try:
    os.setpgid(pid, pid)
except OSError:
    pass  # the job did it already, and ran its command
os.tcsetpgrp(0, pid)
while True:
    _, status = os.waitpid(pid, os.WUNTRACED)
    job_had_it = os.tcgetpgrp(0) == pid
    os.tcsetpgrp(0, os.getpgrp())
    if os.WIFSTOPPED(status):
        print("shell: stopped by", os.WSTOPSIG(status), flush=True)
        sys.stdin.readline()
        os.tcsetpgrp(0, pid)
        os.killpg(pid, signal.SIGCONT)
        print("shell: continued", flush=True)
        continue
    code = os.waitstatus_to_exitcode(status)
    print("shell: exit status", code, "terminal back:", job_had_it, flush=True)
    break
"""


class Terminal:
    """The master side of a pseudo-terminal: typing, and what it showed (`transcript`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.transcript = b""
        self._seen = 0  # up to the end of what was last expected

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def expect(self, text: bytes, timeout: float = 60) -> None:
        """Wait until `text` is shown after what was expected before."""
        deadline = time.monotonic() + timeout
        while (at := self.transcript.find(text, self._seen)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"expected {text!r} on the terminal, got {self.transcript!r}"
            if not select.select([self.fd], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: nothing holds the terminal open any more
                chunk = b""
            assert chunk, f"expected {text!r} on the terminal, got {self.transcript!r}"
            self.transcript += chunk
        self._seen = at + len(text)


def test_in_a_terminal_the_program_gets_ctrl_c_ctrl_z_and_reads_like_a_job(
    tmp_path: Path,
) -> None:
    """Run from a shell with job control: Ctrl-C reaches the program once (not again
    through the tracer), terminal reads reach it, and Ctrl-Z stops the job and `fg`
    continues it, the tracer following its program."""
    program = tmp_path / "terminal.py"
    program.write_text(TERMINAL_PROGRAM)
    master, slave = os.openpty()
    shell = subprocess.Popen(
        [sys.executable, "-c", JOB_SHELL, sys.executable, "-m", "app.cli", "trace",
         "-o", str(tmp_path / "out.jsonl"), "--", sys.executable, str(program)],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    terminal = Terminal(master)
    try:
        terminal.expect(b"name? ")
        terminal.type(b"pipes\n")
        terminal.expect(b"hello pipes")
        terminal.expect(b"again? ")
        terminal.type(b"\x1a")  # Ctrl-Z
        terminal.expect(b"shell: stopped by %d" % signal.SIGTSTP)
        terminal.type(b"fg\n")
        terminal.expect(b"shell: continued")
        terminal.type(b"more\n")
        terminal.expect(b"hello more")
        terminal.expect(b"ready")
        for n in range(1, ROUNDS + 1):
            terminal.type(b"\x03")  # Ctrl-C
            terminal.expect(b"got %d" % n)
        terminal.expect(b"shell: exit status")
        terminal.expect(b"\n")
        assert shell.wait(timeout=30) == 0
    finally:
        kill_session(shell.pid)
        shell.wait()
        os.close(master)
    shown = terminal.transcript.decode()
    assert f"signals{f' {signal.SIGINT:d}' * ROUNDS}\r\n" in shown, shown
    # The program's status is the command's, and the tracer had the terminal back.
    assert "shell: exit status 3 terminal back: True" in shown, shown


LEAVING_PROGRAM = """
import multiprocessing, os, subprocess, sys, time


def answer(end):
    end.send("answered")


def lingering(end, go_on, done):
    end.send("started")
    deadline = time.monotonic() + 60
    while not os.path.exists(go_on) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The tracer is gone: a new pipe, and a child of its own given an end of it.
    a, b = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=answer, args=(b,))
    child.start()
    with open(done, "w") as file:
        file.write(a.recv())
    child.join()


if __name__ == "__main__":
    go_on, done = sys.argv[1:]
    detached = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=lingering, args=(b, go_on, done))
    p.start()
    print(a.recv(), p.pid, detached.pid, flush=True)
    os._exit(0)  # without joining its child
"""


def test_what_the_program_leaves_running_runs_on_untraced(tmp_path: Path) -> None:
    """A process left running on purpose (a detached helper, a child not joined) was
    killed when the program's main process exited; untraced it lives on, and so it does
    now: the trace ends with the program, leaving them and no run directory behind."""
    program, go_on, done = tmp_path / "leaving.py", tmp_path / "go-on", tmp_path / "done"
    program.write_text(LEAVING_PROGRAM)
    output, printed, said = tmp_path / "out.jsonl", tmp_path / "printed", tmp_path / "said"
    left: list[int] = []
    run_id = None
    try:
        # Files, not pipes: what is left running holds its standard streams open.
        with printed.open("w") as out, said.open("w") as err:
            done_trace = subprocess.run(
                [sys.executable, "-m", "app.cli", "trace", "-o", str(output), "--",
                 sys.executable, str(program), str(go_on), str(done)],
                cwd=ROOT, stdout=out, stderr=err, timeout=60,
            )  # fmt: skip
        assert done_trace.returncode == 0, said.read_text()
        started, child, detached = printed.read_text().split()
        left = [int(child), int(detached)]
        assert started == "started"
        assert all(alive(pid) for pid in left), "the tracer ended what the program left"
        events = [json.loads(line) for line in output.read_text().splitlines()]
        run_id = events[0]["run"]
        assert not Path(f"/dev/shm/pipescope-{run_id}").exists()
        assert events[-1]["state"] == "completed"
        # Nobody killed them, and the record says nothing of the kind.
        assert not [e for e in events if e.get("killed") or e.get("verdict") == "killed"]
        assert not [e for e in events if e["pid"] == int(child) and e.get("op") == "exit"]
        # The next trace's sweep leaves them alone too.
        again = [sys.executable, "-m", "app.cli", "trace", "-o", str(tmp_path / "again.jsonl"),
                 "--", sys.executable, "-c", "pass"]  # fmt: skip
        assert subprocess.run(again, cwd=ROOT, timeout=60).returncode == 0
        assert all(alive(pid) for pid in left)
        # Once the tracer is gone, a new pipe and a child given an end of it work,
        # untraced, without making the run directory again.
        go_on.touch()
        deadline = time.monotonic() + 60
        while alive(int(child)):
            assert time.monotonic() < deadline, "the child left running did not finish"
            time.sleep(0.02)
        assert done.read_text() == "answered"
        assert not Path(f"/dev/shm/pipescope-{run_id}").exists()
    finally:
        go_on.touch()
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run_id is not None:
            shutil.rmtree(f"/dev/shm/pipescope-{run_id}", ignore_errors=True)


def test_the_run_name_and_file_name_come_from_pythons_own_options(tmp_path: Path) -> None:
    """-X dev named the run "dev", -W ignore "ignore", and -c CODE the file after a word
    of the code: options that take an argument are read as Python reads them, and the
    events file's name keeps to letters, digits, `.`, `_` and `-`."""
    (tmp_path / "prog.py").write_text("print('prog')\n")
    (tmp_path / "mymod.py").write_text("print('mymod')\n")
    cases = [
        (["-X", "dev", "prog.py"], "prog.py", "prog.pipescope.jsonl"),
        (["-W", "ignore", "-Xdev", "prog.py"], "prog.py", "prog.pipescope.jsonl"),
        (["-Wignore", "-m", "mymod"], "mymod", "mymod.pipescope.jsonl"),
        (["-uc", "import sys; print(1/2); print(sys.argv[0])"], "-c", "c.pipescope.jsonl"),
        (["-c", "a = 1; print(a/2)"], "-c", "c.pipescope.jsonl"),
    ]
    for options, name, file_name in cases:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "trace", "--", sys.executable, *options],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert done.returncode == 0, (options, done.stderr)
        made = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl")
        assert made == [file_name], options
        events = [json.loads(line) for line in (tmp_path / file_name).read_text().splitlines()]
        assert events[0]["message"] == f"tracing {name}"
        (tmp_path / file_name).unlink()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (["-I"], "ignores PYTHONPATH (isolated mode), where the tracing starts"),
        (["-E"], "ignores PYTHONPATH, where the tracing starts"),
        (["-S"], "skips the site module, which starts the tracing"),
        (["-bS", "-X", "dev"], "skips the site module, which starts the tracing"),
    ],
)
def test_options_that_keep_the_tracing_out_are_named_before_the_program_runs(
    tmp_path: Path, options: list[str], why: str
) -> None:
    """-I, -E and -S keep Python from importing the tracer's sitecustomize: the trace
    recorded nothing, and nothing said why."""
    program, output = tmp_path / "pipe.py", tmp_path / "pipe.jsonl"
    program.write_text(SITES_PROGRAM)
    done, events = traced_to(output, [sys.executable, *options, str(program)], timeout=60)
    assert done.returncode == 0 and done.stdout == "x\n", done.stderr
    flag = next(o for o in options if "S" in o or o in ("-I", "-E"))
    assert done.stderr.splitlines() == [
        f"pipescope trace: python -{flag[-1]} {why}: the program runs untraced",
        f"pipescope trace: {len(events)} events written to {output}",
    ]
    assert [e["state"] for e in events] == ["running", "completed"]


OLD_PYTHONS = Path.home() / ".pyenv" / "versions"
# Python 2 and 3 alike: a pipe of each kind, the program's own sitecustomize noted.
OLD_PROGRAM = """
import multiprocessing, sys


def child(one_way, two_way):
    one_way.send("hi")
    two_way.send("there")


if __name__ == "__main__":
    r, w = multiprocessing.Pipe(False)
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(w, b))
    p.start()
    sys.stdout.write("%s %s %s\\n" % (getattr(sys, "OWN_SITE", False), r.recv(), a.recv()))
    p.join()
"""


@pytest.mark.parametrize("version", ["2.7", "3.6", "3.9", "3.10"])
def test_a_python_older_than_pipecores_runs_untraced_and_unharmed(
    tmp_path: Path, version: str
) -> None:
    """Under 3.9 the program failed (fcntl has no F_GETPIPE_SZ), and under 3.6 and 2.7
    every process printed "Error in sitecustomize". Now the tracer's sitecustomize does
    nothing there but run the program's own."""
    found = sorted(OLD_PYTHONS.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {version} in {OLD_PYTHONS}")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.OWN_SITE = True\n")
    program, output = tmp_path / "old.py", tmp_path / "old.jsonl"
    program.write_text(OLD_PROGRAM)
    command = [str(found[-1]), str(program)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert plain.stdout == "True hi there\n", plain.stderr
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(output), "--", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert (done.returncode, done.stdout) == (0, plain.stdout), done.stderr
    assert done.stderr == f"pipescope trace: {len(events)} events written to {output}\n"


def test_the_sitecustomize_keeps_to_the_python_pipecore_supports() -> None:
    # Read, not imported: importing it would run it, and the environment's sitecustomize.
    source = (ROOT / "pipecore" / "autotrace" / "sitecustomize.py").read_text()
    found = re.search(r"^SUPPORTED = (\(.*\))$", source, re.MULTILINE)
    assert found, "sitecustomize.py names no SUPPORTED version"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=")
    assert ast.literal_eval(found.group(1)) == tuple(int(n) for n in required[2:].split("."))


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
