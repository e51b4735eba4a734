"""`pipescope trace -- python prog.py`: run a program with its Pipes traced, to a server
and/or a JSON Lines file, its output and exit status its own."""

import argparse
import contextlib
import os
import re
import signal
import sys
from typing import IO, TYPE_CHECKING, Any

from pipecore.export import jsonl_lines

if TYPE_CHECKING:
    from app.uplink import Uplink


def trace(args: argparse.Namespace) -> int:
    """Trace a program to a server and/or a JSON Lines file; returns the program's exit status
    (2 for bad arguments, 127 or 126 when the program cannot be started, as a shell says)."""
    from app.uplink import UplinkError, ingest_url
    from pipecore.autotrace.command import tracing_off
    from pipecore.tracing import ProgramStartError, program_name, trace_program

    command = list(args.program)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        return _trace_error("expected a command after --, got nothing", 2)
    if args.server is not None:
        try:
            ingest_url(args.server)
        except UplinkError as exc:
            return _trace_error(f"--server: {exc}", 2)
        except ValueError as exc:  # urllib's, e.g. "Invalid IPv6 URL"
            example = "expected a server URL like http://127.0.0.1:8000"
            return _trace_error(f"--server: {example}, got {args.server!r} ({exc})", 2)
    name = args.name or program_name(command)
    output = args.output
    if output is None and args.server is None:
        output = default_output(name)
    counted = [0]
    with contextlib.ExitStack() as stack:
        try:  # before the program runs: a path it cannot write is a bad argument
            out = stack.enter_context(_EventFile(output)) if output else None
        except OSError as exc:
            return _trace_error(f"cannot write the events to {output}: {exc.strerror}", 2)
        uplink, run_id = _open_uplink(args, name)
        if uplink is not None:
            stack.callback(uplink.close)

        def sink(batch: list[dict[str, Any]]) -> None:
            if uplink is not None:
                uplink.send(batch)
            if out is not None:
                out.write(batch)
            counted[0] += len(batch)

        off = tracing_off(command)
        if off is not None:
            print(f"pipescope trace: {off}: the program runs untraced", file=sys.stderr)
        try:
            code = trace_program(command, sink, run_id=run_id, name=name)
        except ProgramStartError as exc:
            if out is not None:
                out.discard()
            return _trace_error(str(exc), exc.status)
    if out is not None:
        print(f"pipescope trace: {out.summary(counted[0])}", file=sys.stderr)
    return _end_like_the_program(code)


def default_output(name: str) -> str:
    """The events file for a program called `name`, in the working directory: its name
    without `.py`, other characters than letters, digits, `.`, `_` and `-` made `_`
    (`-c` gives `c.pipescope.jsonl`)."""
    stem = name.removesuffix(".py")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".-")
    return f"{safe or 'program'}.pipescope.jsonl"


def _trace_error(message: str, code: int) -> int:
    print(f"pipescope trace: error: {message}", file=sys.stderr)
    return code


class _EventFile(contextlib.AbstractContextManager["_EventFile"]):
    """The events as JSON Lines in a file; when the file cannot take more (a full disk)
    one line says so and the program runs on, its events no longer written."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.created = not os.path.lexists(path)
        self.file: IO[bytes] | None = open(path, "wb")  # noqa: SIM115
        self.written = 0
        self.problem: str | None = None

    def write(self, batch: list[dict[str, Any]]) -> None:
        if self.file is None:
            return
        try:
            self.file.writelines(jsonl_lines(batch))
            self.file.flush()
        except OSError as exc:
            self._fail(exc)
            return
        self.written += len(batch)

    def summary(self, events: int) -> str:
        if self.problem is None:
            return f"{self.written} events written to {self.path}"
        return f"{self.written} of {events} events written to {self.path} ({self.problem})"

    def discard(self) -> None:
        """Remove the file when this made it: the program never ran."""
        self.__exit__()
        if self.created:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _fail(self, exc: OSError) -> None:
        file, self.file = self.file, None
        self.problem = str(exc.strerror or exc)
        print(
            f"pipescope trace: cannot write to {self.path}: {self.problem}, after "
            f"{self.written} events; the program runs on",
            file=sys.stderr,
        )
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def __exit__(self, *exc_info: object) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                self._fail(exc)


def _end_like_the_program(code: int) -> int:
    """The program's exit status; one killed by signal N (code -N) ends this process by N
    too, so that the shell sees 128+N (exiting with -N would give 256-N)."""
    if code >= 0:
        return code
    signum = -code
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP keep their default
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    # Still here: a signal whose default does not end a process cannot have ended the
    # program either; give the shell's code for it.
    return 128 + signum


def _open_uplink(args: argparse.Namespace, name: str) -> "tuple[Uplink | None, str | None]":
    """Register the run with --server; on failure say why in one line and trace locally."""
    if args.server is None:
        return None, None
    from app.uplink import Uplink, UplinkError

    uplink = Uplink(args.server, token=args.token, name=name, err=sys.stderr)
    try:
        run = uplink.open()
    except UplinkError as exc:
        where = f"to {args.output} only" if args.output else "without recording it"
        print(f"pipescope trace: {exc}; running the program {where}", file=sys.stderr)
        return None, None
    print(f"pipescope trace: streaming to {args.server} as run {run['id']}", file=sys.stderr)
    return uplink, str(run["id"])
