"""Imported at start-up by every Python process of a traced program (via PYTHONPATH)."""

import os

if os.environ.get("PIPESCOPE_TRACE_DIR"):
    try:
        from pipecore.autotrace.boot import install

        install()
    except Exception as error:  # never break the user's program
        import sys

        print(f"pipescope: tracing is off in this process: {error!r}", file=sys.stderr)
