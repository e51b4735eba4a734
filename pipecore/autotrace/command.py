"""A traced command's Python command line: what it runs, and the options that keep the
tracer's sitecustomize out of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The interpreter's options that take an argument, glued (-Xdev) or as the next word.
WITH_ARGUMENT = frozenset("cmWX")
LONG_WITH_ARGUMENT = frozenset({"--check-hash-based-pycs"})
# Options under which the interpreter never imports the sitecustomize that `pipescope
# trace` puts on PYTHONPATH: the program runs, untraced.
TRACING_OFF = {
    "I": "ignores PYTHONPATH (isolated mode), where the tracing starts",
    "E": "ignores PYTHONPATH, where the tracing starts",
    "S": "skips the site module, which starts the tracing",
}


@dataclass(frozen=True)
class PythonCommand:
    """A `python …` command: its options without an argument (letters, in order) and what
    it runs: `code` (-c), `module` (-m), `script` (a path, or "-" for standard input), or
    none of them (the interactive interpreter)."""

    flags: str = ""
    code: str | None = None
    module: str | None = None
    script: str | None = None


def parse(command: Sequence[str]) -> PythonCommand | None:
    """`command` read as Python's command line, or None when it does not run `python…`."""
    if not command or not Path(command[0]).name.startswith("python"):
        return None
    flags: list[str] = []
    words = iter(command[1:])
    for word in words:
        if word == "--":
            return PythonCommand("".join(flags), script=next(words, None))
        if word.startswith("--"):
            if word in LONG_WITH_ARGUMENT:
                next(words, None)
            continue
        if not word.startswith("-") or word == "-":
            return PythonCommand("".join(flags), script=word)
        for at, letter in enumerate(word[1:], start=2):
            if letter not in WITH_ARGUMENT:
                flags.append(letter)
                continue
            argument = word[at:] or next(words, None)
            if letter == "c":
                return PythonCommand("".join(flags), code=argument or "")
            if letter == "m":
                return PythonCommand("".join(flags), module=argument or "")
            break  # -W or -X: its argument is the rest of the word, or the next one
    return PythonCommand("".join(flags))


def program_name(command: Sequence[str]) -> str:
    """What to call a traced program: its script (`prog.py`), its module (`http.server`),
    `-c` for code given on the command line (as its `sys.argv[0]`), or its executable."""
    python = parse(command)
    if python is not None:
        if python.module:
            return python.module
        if python.code is not None:
            return "-c"
        if python.script:
            return Path(python.script).name or python.script
    return Path(command[0]).name if command else "program"


def tracing_off(command: Sequence[str]) -> str | None:
    """Why the command's interpreter will not import the tracer's sitecustomize (its -I, -E
    or -S option), or None."""
    python = parse(command)
    if python is None:
        return None
    for letter in python.flags:
        if letter in TRACING_OFF:
            return f"python -{letter} {TRACING_OFF[letter]}"
    return None


__all__ = ["PythonCommand", "parse", "program_name", "tracing_off"]
