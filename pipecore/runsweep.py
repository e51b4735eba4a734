"""Runs orphaned by a dead server or tracer: their directories removed (and a server's
processes ended)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import time
from dataclasses import dataclass

from pipecore import runmarks, runprocs, teardown

logger = logging.getLogger("pipecore.runs")

# A server's run (r...) or a `pipescope trace` run (t..., owned by the tracer).
RUN_DIR = re.compile(r"pipescope-([rt][0-9a-f]+)")
# A directory without an owner file was made by a version that did not write one; no run
# lasts this long, so one this old with no process of its run is left over.
UNOWNED_AGE = 3600.0
# The pid of the run's collector process (pipecore.collectmain), written by its server.
COLLECTOR_FILE = "collector.pid"


@dataclass
class Swept:
    """What a sweep removed: run directories, and the processes of those runs it ended."""

    directories: int = 0
    processes: int = 0


def sweep(
    run_root: str,
    *,
    unowned_age: float = UNOWNED_AGE,
    term_grace: float = 1.0,
    kill_grace: float = 3.0,
) -> Swept:
    """Remove the run directories under `run_root` whose server or tracer is gone; for a
    server's run, end first every process carrying a marker of that run and server.

    A directory whose owner (see `runmarks.write_owner`) still runs is never touched. A
    traced program is the user's own: its directory stays while any process of the program
    (one carrying a marker of its run id) still runs and writes into it, and none is ended.
    One without an owner file is removed only when nothing in it changed for `unowned_age`
    seconds and no process carries a marker of its run id.
    """
    swept = Swept()
    if not os.path.isdir("/proc"):
        return swept  # processes cannot be found: better leave everything alone
    try:
        names = sorted(os.listdir(run_root))
    except OSError:
        return swept
    uid = os.getuid()
    for name in names:
        match = RUN_DIR.fullmatch(name)
        if match is None:
            continue
        path = os.path.join(run_root, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        # Another user's runs are not this server's to end; a symlink is not a run.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            continue
        run_id = match.group(1)
        owner = runmarks.read_owner(path)
        if owner is not None and run_id.startswith("t"):
            if runprocs.alive([owner]) or runprocs.find(f"{run_id}.", prefix=True):
                continue
            ended = 0
        elif owner is not None:
            if runprocs.alive([owner]):
                continue
            # A run whose main process was started ahead noted its marker; any other's
            # starts with its id and its server's pid.
            noted = runmarks.read_mark(path, owner)
            mark = noted or f"{run_id}.{owner.pid}."
            pgids = runprocs.groups(runprocs.find(mark, prefix=True))
            ended = teardown.end(mark, prefix=True, term_grace=term_grace, kill_grace=kill_grace)
            teardown.reap_groups(pgids)
            _end_collector(path)
            temp = None if noted is None else runmarks.temp_dir(noted)
            if temp is not None:  # the main process's temporary directory, as the teardown
                shutil.rmtree(temp, ignore_errors=True)
        else:
            if time.time() - _changed(path, info) < unowned_age:
                continue
            if runprocs.find(f"{run_id}.", prefix=True):
                continue
            ended = 0
        shutil.rmtree(path, ignore_errors=True)
        swept.processes += ended
        if not os.path.lexists(path):
            swept.directories += 1
    if swept.directories or swept.processes:
        logger.info(
            "swept %d run directories under %s left by servers or tracers that are gone, "
            "ending %d of their processes",
            swept.directories,
            run_root,
            swept.processes,
        )
    return swept


def _end_collector(run_dir: str) -> None:
    """End the run's collector process if it still runs, and reap it if it was re-parented
    to this process (a child subreaper): it exits by itself once its server is gone."""
    try:
        with open(os.path.join(run_dir, COLLECTOR_FILE)) as file:
            pid = int(file.read().strip())
        with open(f"/proc/{pid}/stat", "rb") as file:
            state, ppid = file.read().rsplit(b")", 1)[1].split()[:2]
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            command = file.read()
    except (OSError, ValueError):
        return
    if state == b"Z":
        # It has exited (a zombie shows no command line): only its parent can reap it.
        if int(ppid) == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return
    if b"pipecore.collectmain" not in command or os.fsencode(run_dir) not in command:
        return  # the pid now belongs to another process
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _changed(path: str, info: os.stat_result) -> float:
    """When the directory or anything in it last changed."""
    newest = info.st_mtime
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    continue
    except OSError:
        pass
    return newest


__all__ = ["UNOWNED_AGE", "Swept", "sweep"]
