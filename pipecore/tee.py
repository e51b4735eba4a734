"""The stdout/stderr tee: every line a process prints becomes an `output` event."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO, cast

TEXT_LIMIT = 8192

# Records one `output` event (stream, line); returns False when nothing records.
Emit = Callable[[str, str], bool]


class Tee:
    """Writes through to the original stream and turns each line into an event."""

    def __init__(self, target: TextIO, stream: str, emit: Emit) -> None:
        self.target = target
        self.stream = stream
        self.emit = emit
        self.partial = ""
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        n = self.target.write(s)
        if s:
            with self.lock:
                text = self.partial + s
                lines = text.split("\n")
                self.partial = lines.pop()
            for line in lines:
                self._emit(line)
        return n

    def _emit(self, line: str) -> None:
        if len(line) > TEXT_LIMIT:
            line = line[: TEXT_LIMIT - 1] + "…"
        self.emit(self.stream, line)

    def flush_partial(self) -> None:
        with self.lock:
            line, self.partial = self.partial, ""
        if line:
            self._emit(line)

    def reset_after_fork(self) -> None:
        self.partial = ""
        self.lock = threading.Lock()

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_tees: list[Tee] = []


def install_tees(emit: Emit) -> None:
    """Replace sys.stdout and sys.stderr by tees (once)."""
    if _tees:
        return
    for stream in ("stdout", "stderr"):
        target = getattr(sys, stream)
        if target is None:
            continue
        tee = Tee(target, stream, emit)
        _tees.append(tee)
        setattr(sys, stream, cast(TextIO, tee))


def flush_tees() -> None:
    """Emit each tee's unfinished line."""
    for tee in _tees:
        tee.flush_partial()


def reset_tees_after_fork() -> None:
    """Forget unfinished lines and locks inherited from the parent."""
    for tee in _tees:
        tee.reset_after_fork()


def remove_tees() -> None:
    """Put the original streams back."""
    for tee in _tees:
        if getattr(sys, tee.stream) is tee:
            setattr(sys, tee.stream, tee.target)
    _tees.clear()
