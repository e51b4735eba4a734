"""`pipescope trace` and the traced program as a job: signals, the terminal, a killed tracer,
what the program leaves running."""

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.tracing import (
    ROOT,
    traced_to,
)
from tests.reliability.conftest import alive

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
