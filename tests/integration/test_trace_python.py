"""`pipescope trace` and the program's Python: its imports, its options, older Pythons, the
sitecustomize."""

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.tracing import (
    ROOT,
    SITES_PROGRAM,
    traced_to,
)

SITE_PROGRAM = """
import builtins, multiprocessing


def child(end):
    end.send("hi")


if __name__ == "__main__":
    print("user sitecustomize ran:", getattr(builtins, "USER_SITE", False))
    for name in ("tests", "bench", "boot"):
        try:
            __import__(name)
            print("import", name, "-> found")
        except ImportError:
            print("import", name, "-> ImportError")
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(b,))
    p.start()
    print(a.recv())
    p.join()
"""


def test_the_program_imports_what_it_would_untraced(tmp_path: Path) -> None:
    """The tracer's own sitecustomize runs the program's one after it, and nothing of this
    installation but pipecore (not its tests, bench, or boot module) joins the path."""
    (tmp_path / "userpath").mkdir()
    (tmp_path / "userpath" / "sitecustomize.py").write_text(
        "import builtins\nbuiltins.USER_SITE = True\n"
    )
    (tmp_path / "prog.py").write_text(SITE_PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "userpath")}
    program = [sys.executable, str(tmp_path / "prog.py")]
    plain = subprocess.run(
        program, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    # The installed command, so that this tree is not on the path the program inherits.
    pipescope = str(Path(sys.executable).parent / "pipescope")
    traced = subprocess.run(
        [pipescope, "trace", "-o", str(tmp_path / "out.jsonl"), "--", *program],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plain.stdout.splitlines()[:4] == [
        "user sitecustomize ran: True", "import tests -> ImportError",
        "import bench -> ImportError", "import boot -> ImportError",
    ]  # fmt: skip
    assert traced.stdout == plain.stdout, traced.stderr
    events = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len([e for e in events if e["kind"] == "call" and e["phase"] == "end"]) >= 2


def test_the_run_name_and_file_name_come_from_pythons_own_options(tmp_path: Path) -> None:
    """-X dev named the run "dev", -W ignore "ignore", and -c CODE the file after a word
    of the code: options that take an argument are read as Python reads them, and the
    events file's name keeps to letters, digits, `.`, `_` and `-`."""
    (tmp_path / "prog.py").write_text("print('prog')\n")
    (tmp_path / "mymod.py").write_text("print('mymod')\n")
    cases = [
        (["-X", "dev", "prog.py"], "prog.py", "prog.pipescope.jsonl"),
        (["-W", "ignore", "-Xdev", "prog.py"], "prog.py", "prog.pipescope.jsonl"),
        (["-Wignore", "-m", "mymod"], "mymod", "mymod.pipescope.jsonl"),
        (["-uc", "import sys; print(1/2); print(sys.argv[0])"], "-c", "c.pipescope.jsonl"),
        (["-c", "a = 1; print(a/2)"], "-c", "c.pipescope.jsonl"),
    ]
    for options, name, file_name in cases:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "trace", "--", sys.executable, *options],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert done.returncode == 0, (options, done.stderr)
        made = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl")
        assert made == [file_name], options
        events = [json.loads(line) for line in (tmp_path / file_name).read_text().splitlines()]
        assert events[0]["message"] == f"tracing {name}"
        (tmp_path / file_name).unlink()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (["-I"], "ignores PYTHONPATH (isolated mode), where the tracing starts"),
        (["-E"], "ignores PYTHONPATH, where the tracing starts"),
        (["-S"], "skips the site module, which starts the tracing"),
        (["-bS", "-X", "dev"], "skips the site module, which starts the tracing"),
    ],
)
def test_options_that_keep_the_tracing_out_are_named_before_the_program_runs(
    tmp_path: Path, options: list[str], why: str
) -> None:
    """-I, -E and -S keep Python from importing the tracer's sitecustomize: the trace
    recorded nothing, and nothing said why."""
    program, output = tmp_path / "pipe.py", tmp_path / "pipe.jsonl"
    program.write_text(SITES_PROGRAM)
    done, events = traced_to(output, [sys.executable, *options, str(program)], timeout=60)
    assert done.returncode == 0 and done.stdout == "x\n", done.stderr
    flag = next(o for o in options if "S" in o or o in ("-I", "-E"))
    assert done.stderr.splitlines() == [
        f"pipescope trace: python -{flag[-1]} {why}: the program runs untraced",
        f"pipescope trace: {len(events)} events written to {output}",
    ]
    assert [e["state"] for e in events] == ["running", "completed"]


OLD_PYTHONS = Path.home() / ".pyenv" / "versions"
# Python 2 and 3 alike: a pipe of each kind, the program's own sitecustomize noted.
OLD_PROGRAM = """
import multiprocessing, sys


def child(one_way, two_way):
    one_way.send("hi")
    two_way.send("there")


if __name__ == "__main__":
    r, w = multiprocessing.Pipe(False)
    a, b = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(w, b))
    p.start()
    sys.stdout.write("%s %s %s\\n" % (getattr(sys, "OWN_SITE", False), r.recv(), a.recv()))
    p.join()
"""


@pytest.mark.parametrize("version", ["2.7", "3.6", "3.9", "3.10"])
def test_a_python_older_than_pipecores_runs_untraced_and_unharmed(
    tmp_path: Path, version: str
) -> None:
    """Under 3.9 the program failed (fcntl has no F_GETPIPE_SZ), and under 3.6 and 2.7
    every process printed "Error in sitecustomize". Now the tracer's sitecustomize does
    nothing there but run the program's own."""
    found = sorted(OLD_PYTHONS.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {version} in {OLD_PYTHONS}")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.OWN_SITE = True\n")
    program, output = tmp_path / "old.py", tmp_path / "old.jsonl"
    program.write_text(OLD_PROGRAM)
    command = [str(found[-1]), str(program)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert plain.stdout == "True hi there\n", plain.stderr
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "trace", "-o", str(output), "--", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert (done.returncode, done.stdout) == (0, plain.stdout), done.stderr
    assert done.stderr == f"pipescope trace: {len(events)} events written to {output}\n"


def test_the_sitecustomize_keeps_to_the_python_pipecore_supports() -> None:
    # Read, not imported: importing it would run it, and the environment's sitecustomize.
    source = (ROOT / "pipecore" / "autotrace" / "sitecustomize.py").read_text()
    found = re.search(r"^SUPPORTED = (\(.*\))$", source, re.MULTILINE)
    assert found, "sitecustomize.py names no SUPPORTED version"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=")
    assert ast.literal_eval(found.group(1)) == tuple(int(n) for n in required[2:].split("."))
