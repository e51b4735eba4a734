"""What every Python process of a traced program runs at start-up: the `sitecustomize`
that `pipescope trace` puts first on its PYTHONPATH (pipecore/autotrace/sitecustomize.py)
calls `start`, then runs the program's own sitecustomize."""

from __future__ import annotations

import os
import sys


def start() -> None:
    """Trace this process's pipes, when it belongs to a `pipescope trace` run."""
    if not os.environ.get("PIPESCOPE_TRACE_DIR"):
        return
    try:
        from pipecore.autotrace.boot import install

        install()
    except Exception as error:  # never break the user's program
        print(f"pipescope: tracing is off in this process: {error!r}", file=sys.stderr)
