"""A run's main process: `python -m pipecore.runmain --run-dir D --run-id R --scenario S ...`,
or `--spare`: started ahead of its run, which it is then told on standard input.

A spare does, before any run needs it, what costs a run's start most: the interpreter,
the imports, the resource tracker and a fork server that has the workers' modules loaded.
The server gives it its run's marker, process group and standard error from the start
(`start_spare`), so once told its run it is that run's main process in every way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import shutil
import sys
import traceback
from typing import IO, TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the server's side only: a spawned worker imports this module too
    import subprocess

START_METHODS = ("forkserver", "spawn", "fork")
SPARE_FLAG = "--spare"
# Loaded once in a spare's fork server, which forks every worker with them already loaded.
WORKER_MODULES = (
    "pipecore.runmain",
    "pipecore.telemetry",
    "pipecore.traced",
    "pipecore.scenarios.catalogue",
)


class MainProcess(NamedTuple):
    """A run's main process (or a spare): the process, its run marker, its stderr file."""

    proc: subprocess.Popen[bytes]
    mark: str
    stderr: IO[bytes]

    def ready(self) -> bool:
        """Whether a spare has done what it does ahead of its run (it said so on its
        standard output), or has died; False for a spare still starting."""
        out = self.proc.stdout
        return out is not None and (out.closed or bool(select.select([out], [], [], 0)[0]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line RunManager builds."""
    parser = argparse.ArgumentParser(prog="python -m pipecore.runmain")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--params", default="{}", help="JSON object of parameters")
    parser.add_argument("--start-method", default="forkserver", choices=START_METHODS)
    return parser.parse_args(argv)


def command_args(
    run_dir: str, run_id: str, scenario: str, params: object, start_method: str
) -> list[str]:
    """The arguments of a run's main process (after `python -m pipecore.runmain`)."""
    return [
        "--run-dir",
        run_dir,
        "--run-id",
        run_id,
        "--scenario",
        scenario,
        "--params",
        json.dumps(params),
        "--start-method",
        start_method,
    ]


def _popen(args: list[str], mark: str, *, spare: bool) -> MainProcess:
    import subprocess
    import tempfile

    from pipecore import runmarks

    # Closed by the run once it has been torn down (or by end_spare).
    stderr = tempfile.TemporaryFile(prefix="pipescope-stderr-")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipecore.runmain", *args],
            stdin=subprocess.PIPE if spare else subprocess.DEVNULL,
            # A spare says on it when it is ready, then makes it /dev/null.
            stdout=subprocess.PIPE if spare else subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            env=runmarks.main_environment(mark),
        )
    except BaseException:
        stderr.close()
        raise
    return MainProcess(proc, mark, stderr)


def start_spare(nice: int = 0) -> MainProcess:
    """A main process started ahead of its run, in its own session and with its own run
    marker, its session's CPU weight `nice` until a run takes it; `start` tells it its
    run, `end_spare` ends one no run took."""
    from pipecore import runmarks, runprocs

    spare = _popen([SPARE_FLAG], runmarks.new_mark("spare"), spare=True)
    if nice:
        runprocs.set_session_nice(spare.proc.pid, nice)
    return spare


def start(args: list[str], mark: str, spare: MainProcess | None = None) -> MainProcess:
    """The run's main process with arguments `args` (see `command_args`): `spare`, told its
    run, or, when there is none or it died, a new process carrying `mark`."""
    if spare is not None:
        try:
            assert spare.proc.stdin is not None
            if spare.proc.poll() is None:
                from pipecore import runprocs

                runprocs.set_session_nice(spare.proc.pid, 0)  # a run's own weight from now
                spare.proc.stdin.write(json.dumps(args).encode() + b"\n")
                # Its only line: the end of input tells the spare nothing more comes.
                spare.proc.stdin.close()
                if spare.proc.stdout is not None:
                    spare.proc.stdout.close()
                return spare
        except OSError:
            pass  # it died waiting (its end of the pipe is closed)
        end_spare(spare)
    return _popen(args, mark, spare=False)


def end_spare(spare: MainProcess, grace: float = 1.0) -> None:
    """End a spare no run took (or one that died) with its fork server and resource
    tracker: the end of its input ends them; whatever is left is then ended by its
    process group and marker. Its pipe and stderr file are closed."""
    import subprocess

    from pipecore import teardown

    for pipe in (spare.proc.stdin, spare.proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        spare.proc.wait(timeout=grace)
    teardown.end_run(spare.proc, spare.mark, term_grace=grace, kill_grace=3.0)
    spare.stderr.close()


def _start_forkserver() -> None:
    """Start the fork server now, with the workers' modules: its interpreter loads them
    while this one loads its own; it starts the resource tracker too."""
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(list(WORKER_MODULES))
    forkserver.ensure_running()


def _wait_for_run() -> list[str] | None:
    """In a spare: import and start what a run needs, then read the run's arguments."""
    # Standard output says when this spare is ready (on a descriptor no child inherits);
    # the run's program and the fork server's writes go nowhere, as in a main process
    # started for its run.
    ready = os.dup(1)
    devnull_out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull_out, 1)
    os.close(devnull_out)
    # Every start method may need the resource tracker; forkserver needs both.
    _start_forkserver()
    from pipecore import runmarks, telemetry, traced  # noqa: F401  (loaded ahead)
    from pipecore.scenarios import catalogue  # noqa: F401

    # Ready: the server takes a ready spare before one still starting.
    with contextlib.suppress(OSError):
        os.write(ready, b"ready\n")
    os.close(ready)
    line = sys.stdin.buffer.readline()
    # The run's program reads no input, as in a main process started for its run.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if not line:
        return None  # the server is gone or needs no more runs
    args = json.loads(line)
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise ValueError(f"expected a JSON list of arguments, got {line[:200]!r}")
    return args


def _remove_own_temp_dir() -> None:
    """A spare no run took (its server gone without ending it) removes the temporary
    directory made for it (runmarks.temp_dir), after multiprocessing has removed its own
    inside it at exit: no teardown will."""
    from multiprocessing import util

    from pipecore import runmarks
    from pipecore.runprocs import MARK_VARIABLE

    temp = os.environ.get("TMPDIR", "")
    mark = os.environ.get(MARK_VARIABLE, "")
    if mark and os.path.basename(temp) == runmarks.temp_dir_name(mark):
        # After multiprocessing's removal of its own directory (exit priority -100).
        util.Finalize(None, shutil.rmtree, args=(temp,), kwargs={"ignore_errors": True},
                      exitpriority=-101)  # fmt: skip


def _stop_forkserver() -> None:
    """A spare told to run under spawn or fork does not keep the fork server it started:
    the end of its `alive` pipe ends it (not waited for: it may still be loading; the
    run's teardown reaps it with the run's process group)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    alive = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive, int):
        os.close(alive)
        for name in ("_forkserver_alive_fd", "_forkserver_pid", "_forkserver_address"):
            setattr(server, name, None)


def main(argv: list[str] | None = None) -> int:
    """Activate telemetry, validate the parameters and run the scenario; 0 on success."""
    argv = sys.argv[1:] if argv is None else argv
    spare = argv == [SPARE_FLAG]
    if spare:
        told = _wait_for_run()
        if told is None:
            _remove_own_temp_dir()
            return 0
        # Workers (spawn) see the command line a main process started for its run has.
        argv = sys.argv[1:] = told
    args = parse_args(argv)
    if spare and args.start_method != "forkserver":
        _stop_forkserver()
    elif not spare and args.start_method == "forkserver":
        _start_forkserver()
    # Imported here so that a spawned child re-importing this module as __mp_main__
    # does no work at import time.
    from pipecore import runmarks, telemetry
    from pipecore.scenarios import ParamError, get_scenario

    telemetry.activate(args.run_dir, args.run_id)
    code = 1
    try:
        # Only registered scenarios run: the request names one, nothing is imported from it.
        scenario = get_scenario(args.scenario)
        params = scenario.validate(json.loads(args.params))
        # Programs that use multiprocessing.Process directly get the chosen method too.
        multiprocessing.set_start_method(args.start_method, force=True)
        scenario.main(params, multiprocessing.get_context(args.start_method))
        code = 0
        # Workers still running now are ended by this process's exit, not by a fault.
        left = [p.pid for p in multiprocessing.active_children() if p.pid is not None]
        with contextlib.suppress(OSError):
            runmarks.write_left(args.run_dir, left)
    except ParamError as exc:
        print(f"pipescope: {exc.message}", file=sys.stderr)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        telemetry.record_exit(code)
        telemetry.deactivate()
    return code


if __name__ == "__main__":
    sys.exit(main())
