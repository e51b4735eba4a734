"""CollectorFeed: the server's end of a run's collector process and the messages it sends."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable

from pipecore import collectmain
from pipecore.collectwire import Message, MessageReader

# How long one read waits for a message while the run goes on.
READ_INTERVAL = 0.01
# The collector process's last drain: it holds events back 5 ms and may have a backlog.
FINAL_DRAIN_SECONDS = 60.0
READ_BYTES = 1 << 20


class CollectorFeed:
    """Reads what a run's collector process (`pipecore.collectmain`) sends, and ends it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.final = False  # its final message has been read
        self._reader = MessageReader()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def failed(self) -> int | None:
        """The exit status of a collector process that exited before its final message."""
        return None if self.final else self.proc.poll()

    def read(self, take: Callable[[Message], None], *, final: bool) -> None:
        """Hand `take` each message the process sent: what comes within READ_INTERVAL, or
        with `final` everything up to its last message (the run's processes are gone)."""
        proc = self.proc
        if proc.stdout is None:
            return
        fd = proc.stdout.fileno()
        if final:
            if self.final or proc.poll() is not None:
                return
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"final\n")
                proc.stdin.flush()
            except OSError:
                return  # it died: what it sent is taken, the rest is lost with it
        deadline = time.monotonic() + (FINAL_DRAIN_SECONDS if final else READ_INTERVAL)
        while not self.final:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return
            data = os.read(fd, READ_BYTES)
            if not data:
                return
            for message in self._reader.feed(data):
                self.final = self.final or message.final
                take(message)
            if not final:
                return

    def end(self, grace: float) -> None:
        """Make sure the process is gone and its pipes closed (see `collectmain.end`)."""
        collectmain.end(self.proc, grace)
