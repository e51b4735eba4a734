"""`pipescope export RUN`: write a recorded run as JSON Lines or a Chrome trace."""

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

from app.store import NotRecords, Records, default_db_path
from pipecore.export import to_chrome_trace, to_jsonl


def export(args: argparse.Namespace) -> int:
    """Write one recorded run; 1 when the database or the run is not there or the output
    cannot be written, 2 for a bad argument (an output path that cannot be opened)."""
    if args.db == "":
        return _export_error("expected a file path for --db, got ''", 2)
    try:
        args.run.encode("utf-8")
    except UnicodeEncodeError:
        return _export_error(f"expected a run id such as r7f3a2c, got {args.run!r}", 2)
    path = args.db or os.environ.get("PIPESCOPE_DB") or default_db_path()
    if not Path(path).is_file():
        return _export_error(f"no record database at {path}", 1)
    try:
        store = Records.read_only(path)
        try:
            if store.run(args.run) is None:
                known = ", ".join(summary["id"] for summary in store.runs()[:10]) or "none"
                return _export_error(f"unknown run {args.run!r} in {path} (latest: {known})", 1)
            events = store.events(args.run)
        finally:
            store.close()
    except NotRecords as exc:
        return _export_error(str(exc), 1)
    except sqlite3.Error as exc:
        return _export_error(f"cannot read the record database {path}: {exc}", 1)
    if args.format == "chrome":
        text = json.dumps(to_chrome_trace(events)) + "\n"
    else:
        text = "".join(to_jsonl(events))
    if args.output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:
            return _export_error(f"cannot write to standard output: {exc.strerror or exc}", 1)
        return 0
    try:
        file = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 (errors told apart)
    except OSError as exc:
        return _export_error(f"cannot write {args.output}: {exc.strerror or exc}", 2)
    try:
        with file:
            file.write(text)
    except OSError as exc:
        return _export_error(f"cannot write {args.output}: {exc.strerror or exc}", 1)
    return 0


def _export_error(message: str, code: int) -> int:
    print(f"pipescope export: error: {message}", file=sys.stderr)
    return code
