"""PipeScope's core: a traced multiprocessing.Pipe, its telemetry, analysis and runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipecore.traced import Pipe, TracedConnection

__all__ = ["Pipe", "TracedConnection"]


def __getattr__(name: str) -> Any:
    # The traced Pipe is imported when first asked for: a run's collector process, which
    # never uses it, starts without it (about 30 ms sooner).
    if name in __all__:
        from pipecore import traced

        return getattr(traced, name)
    raise AttributeError(f"module 'pipecore' has no attribute {name!r}")
