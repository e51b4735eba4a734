"""What every Python process of a traced program runs at start-up: the `sitecustomize`
that `pipescope trace` puts first on its PYTHONPATH calls `start`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def start(ours: str) -> None:
    """Trace this process's pipes, then run the program's own `sitecustomize`, if it has
    one further on its path, which `ours` (the file calling this) shadows."""
    if os.environ.get("PIPESCOPE_TRACE_DIR"):
        try:
            from pipecore.autotrace.boot import install

            install()
        except Exception as error:  # never break the user's program
            print(f"pipescope: tracing is off in this process: {error!r}", file=sys.stderr)
    here = os.path.dirname(os.path.abspath(ours))
    rest = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)
