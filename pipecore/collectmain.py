"""A run's collector process: drains the run's rings, orders and analyses the events, and
sends them to the server as encoded parts (`pipecore.collectwire`) on its standard output.

The server starts one per run (`pipecore.scenariorun`), so that decoding, ordering and
analysing the stream do not share the server's interpreter lock with its event loop. A
line `final` on standard input (once the run's processes are gone) asks for the last
drain; the process sends it with `final` set, removes the run directory and exits. End of
input without it means the server is gone: the process exits and leaves the directory to
the next server's sweep (`pipecore.runsweep`), which ends what is left of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import subprocess
import sys

from pipecore import runprocs
from pipecore.runpump import RunPump

DRAIN_INTERVAL = 0.01
# The pipe to the server holds this much (see _popen).
PIPE_BYTES = 1 << 20


def _write_all(fd: int, pieces: list[bytes]) -> None:
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


def serve(pump: RunPump, commands: int, out: int) -> bool:
    """Pump until told to finish; True when the server asked for the final drain."""
    while True:
        # Behind the run's processes: drain again at once.
        wait = 0.0 if pump.busy else DRAIN_INTERVAL
        ready, _, _ = select.select([commands], [], [], wait)
        told = os.read(commands, 4096) if ready else b""
        final = bool(ready)
        message = pump.pump(final=final)
        if message is not None:
            _write_all(out, message)
        if final:
            return told.startswith(b"final")


def command(run_dir: str, run_id: str, first_seq: int, deadlock_after_ns: int) -> list[str]:
    """The command line that starts a run's collector process."""
    return [
        sys.executable,
        "-m",
        "pipecore.collectmain",
        "--run-dir",
        run_dir,
        "--run-id",
        run_id,
        "--first-seq",
        str(first_seq),
        "--deadlock-ns",
        str(deadlock_after_ns),
    ]


def _popen(args: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, close_fds=True
    )
    assert proc.stdout is not None
    # The server's reading thread takes the interpreter lock again after every read;
    # while its event loop is busy that can take milliseconds, so each read should
    # bring a lot (a pipe holds 64 KiB by default).
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return proc


def start_spare(nice: int = 0) -> subprocess.Popen[bytes]:
    """A collector process started ahead of its run: its interpreter and imports (about
    70 ms of CPU) are done before a run needs it, with its session's CPU weight `nice`
    until then; `start` tells it which run is its."""
    spare = _popen([sys.executable, "-m", "pipecore.collectmain", "--spare"])
    if nice:
        runprocs.set_session_nice(spare.pid, nice)
    return spare


def start(
    run_dir: str,
    run_id: str,
    first_seq: int,
    deadlock_after_ns: int,
    spare: subprocess.Popen[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """The run's collector process: `spare`, told its run, or a new one."""
    if spare is not None:
        line = json.dumps(
            {
                "run_dir": run_dir,
                "run_id": run_id,
                "first_seq": first_seq,
                "deadlock_ns": deadlock_after_ns,
            }
        )
        try:
            assert spare.stdin is not None
            runprocs.set_session_nice(spare.pid, 0)  # a run's own weight from now
            spare.stdin.write(line.encode() + b"\n")
            spare.stdin.flush()
            return spare
        except OSError:
            end(spare)  # it died waiting: start one the slow way
    return _popen(command(run_dir, run_id, first_seq, deadlock_after_ns))


def end(feed: subprocess.Popen[bytes], grace: float = 1.0) -> None:
    """End a collector process (a run's, after its last message, or a spare no run took)
    and close its pipes: the end of its input ends it, SIGKILL after `grace` seconds."""
    for stream in (feed.stdin, feed.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):  # a pipe whose reader is gone
                stream.close()
    try:
        feed.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        feed.kill()
        feed.wait()


def _read_line(fd: int) -> bytes:
    """One line from `fd`, read a byte at a time so that nothing after it is taken."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return bytes(line)
        line += byte


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipecore.collectmain")
    parser.add_argument("--spare", action="store_true", help="wait for the run on stdin")
    parser.add_argument("--run-dir")
    parser.add_argument("--run-id")
    parser.add_argument("--first-seq", type=int)
    parser.add_argument("--deadlock-ns", type=int)
    args = parser.parse_args(argv)
    commands = sys.stdin.fileno()
    if args.spare:
        line = _read_line(commands)
        if not line:
            return 0  # the server is gone or needs no more runs
        run = json.loads(line)
        args.run_dir, args.run_id = str(run["run_dir"]), str(run["run_id"])
        args.first_seq, args.deadlock_ns = int(run["first_seq"]), int(run["deadlock_ns"])
    elif None in (args.run_dir, args.run_id, args.first_seq, args.deadlock_ns):
        parser.error("--run-dir, --run-id, --first-seq and --deadlock-ns are required")
    pump = RunPump(args.run_dir, args.run_id, args.first_seq, args.deadlock_ns)
    asked = False
    try:
        asked = serve(pump, commands, sys.stdout.fileno())
    except BrokenPipeError:
        pass  # the server is gone; its successor's sweep ends the run
    finally:
        pump.close(remove=asked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
