"""The core never depends on the web layer: pipecore imports no web package."""

import ast
from pathlib import Path

import pipecore

FORBIDDEN = {"app", "fastapi", "starlette", "jinja2", "uvicorn", "websockets", "pydantic"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pipecore_imports_nothing_from_the_web_layer() -> None:
    package = Path(pipecore.__file__).parent
    offenders = {
        str(path.relative_to(package)): sorted(_imported_roots(path) & FORBIDDEN)
        for path in sorted(package.rglob("*.py"))
    }
    offenders = {name: found for name, found in offenders.items() if found}
    assert offenders == {}, f"pipecore must not import the web layer, but: {offenders}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom fastapi import FastAPI\nfrom . import sibling\n")
    assert _imported_roots(sample) & FORBIDDEN == {"fastapi"}
