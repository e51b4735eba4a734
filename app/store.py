"""Run records in SQLite: summaries and events, written in batches by one writer thread."""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from app.storewriter import StoreWriter, unpacked
from pipecore.parts import Part, part_of
from pipecore.runs import BaseRun

Event = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    last INTEGER NOT NULL,
    count INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
"""
# Events arrive in batches in seq order: each batch is one row of `chunks` (a JSON array
# of its events, seq to last), which costs the writer one row, not one per event. `events`
# holds single events: those saved again with more fields (they replace the chunk's copy)
# and whole runs recorded before chunks existed.
CHUNK_PAGE = 64
RECORD_TABLES = ("runs", "events", "chunks")


def default_db_path() -> str:
    """The database under the user's data directory ($XDG_DATA_HOME or ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "pipescope" / "pipescope.sqlite3")


class NotRecords(ValueError):
    """A file that is not a PipeScope record database; the message says what it is."""


class Records:
    """The reads of a record database: run summaries and events (any thread)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    @classmethod
    def read_only(cls, path: str) -> Records:
        """The database at `path`, opened read-only: nothing in it or beside it is changed
        (a Store would create its tables, even in a file that is not one). NotRecords
        when it is not a PipeScope record database; sqlite3.Error when it cannot be read."""
        location = urllib.parse.quote(os.fsencode(os.path.abspath(path)))
        db = sqlite3.connect(f"file:{location}?mode=ro", uri=True, check_same_thread=False)
        expected = f"expected a PipeScope record database at {path}"
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            db.close()
            raise NotRecords(f"{expected}, got a file that is not SQLite ({exc})") from None
        if not set(RECORD_TABLES) <= tables:
            db.close()
            found = f"tables {', '.join(sorted(tables))}" if tables else "no tables"
            raise NotRecords(
                f"{expected} (tables {', '.join(RECORD_TABLES)}), got an SQLite file with {found}"
            )
        return cls(db, threading.Lock())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def runs(self) -> list[dict[str, Any]]:
        """Every stored run's summary, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT summary FROM runs ORDER BY started DESC, id").fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT summary FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def events(self, run_id: str) -> list[Event]:
        return list(self.iter_events(run_id))

    def iter_events(self, run_id: str, batch: int = 5000, *, after: int = 0) -> Iterator[Event]:
        """The run's events with a `seq` above `after`, in order, read a page at a time."""
        while True:
            with self._lock:
                chunks = self._db.execute(
                    "SELECT last, body FROM chunks WHERE run = ? AND last > ? ORDER BY seq LIMIT ?",
                    (run_id, after, CHUNK_PAGE),
                ).fetchall()
                upto = chunks[-1][0] if chunks else None
                if upto is None:
                    singles = self._db.execute(
                        "SELECT seq, body FROM events WHERE run = ? AND seq > ? ORDER BY seq "
                        "LIMIT ?",
                        (run_id, after, batch),
                    ).fetchall()
                else:
                    singles = self._db.execute(
                        "SELECT seq, body FROM events WHERE run = ? AND seq > ? AND seq <= ?",
                        (run_id, after, upto),
                    ).fetchall()
            if not chunks and not singles:
                return
            page: dict[int, Event] = {}
            for _, body in chunks:
                for event in orjson.loads(unpacked(body)):
                    page[event["seq"]] = event
            for seq, body in singles:
                page[seq] = orjson.loads(body)
            for seq in sorted(page):
                if seq > after:
                    yield page[seq]
            after = upto if upto is not None else singles[-1][0]


class Store(Records):
    """Keeps every run's summary and events; survives a restart of the server.

    Writes go through a queue to one writer thread (`StoreWriter`) that commits them in
    batches, so callers on the event loop or the collector thread never wait for the
    disk. Retention keeps at most `max_runs` runs and `max_events` events, oldest first out.
    """

    def __init__(self, path: str, *, max_runs: int = 200, max_events: int = 2_000_000) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_runs = max_runs
        self.max_events = max_events
        # one connection, used by the writer thread and (under the lock) by readers
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL syncs at checkpoints, not at every commit: a commit survives
            # the server's crash (the WAL is in the page cache), not a power cut.
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        super().__init__(db, threading.Lock())
        self._writer = StoreWriter(self._db, self._lock, max_runs=max_runs, max_events=max_events)

    # writes (any thread; they return at once)
    def save_run(self, summary: dict[str, Any]) -> None:
        self._writer.put(("run", dict(summary)))

    def append_events(self, events: list[Event]) -> None:
        runs: dict[str, list[Event]] = {}
        for event in events:
            runs.setdefault(str(event["run"]), []).append(event)
        for run_id, batch in runs.items():
            self.append_parts(run_id, [part_of(sorted(batch, key=_seq))])

    def append_parts(self, run_id: str, parts: list[Part]) -> None:
        """Queue parts of one run's stream (their JSON is written as it is)."""
        if parts:
            self._writer.put(("parts", (run_id, list(parts))))

    def record(self, run: BaseRun) -> None:
        """Keep the run's summary and events as they arrive, and its final summary.

        The subscriber runs on the publishing thread; the store only queues for its writer.
        """

        def keep(batch: list[Part]) -> None:
            self.append_parts(run.id, batch)
            if any(part.states for part in batch):
                if run.state.terminal:
                    # The rare receive annotated after it was published: keep its final form.
                    self.append_events(run.amended())
                self.save_run(_record_of(run))

        so_far, _ = run.subscribe_parts(keep)
        if so_far:
            keep([part_of(so_far)])
        if run.state.terminal:
            # It may have ended before `keep` saw it: make the final summary the last one saved.
            self.save_run(_record_of(run))

    def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done = threading.Event()
        self._writer.put(("flush", done))
        done.wait()

    def close(self) -> None:
        self._writer.close()
        super().close()


def _seq(event: Event) -> int:
    return int(event["seq"])


def _record_of(run: BaseRun) -> dict[str, Any]:
    summary = run.summary()
    if run.state.terminal:
        summary["analysis"] = run.analysis_snapshot()
    return summary
