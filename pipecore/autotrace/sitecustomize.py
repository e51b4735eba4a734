"""`pipescope trace`'s sitecustomize, first on a traced program's path: it starts tracing
the process, then runs the program's own sitecustomize. Any Python from 2.7 on parses it;
one older than pipecore supports is left untraced, silently."""

import os
import sys

# pyproject.toml's requires-python.
SUPPORTED = (3, 11)


def _start_tracing():
    # type: () -> None
    try:
        from pipecore.autotrace.startup import start
    except Exception as error:  # never break the user's program
        sys.stderr.write("pipescope: tracing is off in this process: " + repr(error) + "\n")
        return
    start()


def _run_own_sitecustomize():
    # type: () -> None
    """Run the `sitecustomize` further on the path, which this one shadows, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    try:
        from importlib.machinery import PathFinder
        from importlib.util import module_from_spec
    except ImportError:  # Python 2
        _run_own_sitecustomize_2(rest)
        return
    spec = PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _run_own_sitecustomize_2(path):
    # type: (list[str]) -> None
    imp = __import__("imp")
    try:
        found = imp.find_module("sitecustomize", path)
    except ImportError:
        return
    # Python 2's import returns what sys.modules holds under this name once this file
    # has run: the program's module.
    sys.modules.pop("sitecustomize", None)
    try:
        imp.load_module("sitecustomize", *found)
    finally:
        if found[0] is not None:
            found[0].close()


if sys.version_info >= SUPPORTED:
    _start_tracing()
_run_own_sitecustomize()
