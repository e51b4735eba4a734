"""Run records in SQLite: summaries and events, written in batches by one writer thread."""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
"""


def default_db_path() -> str:
    """The database under the user's data directory ($XDG_DATA_HOME or ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "pipescope" / "pipescope.sqlite3")


class Store:
    """Keeps every run's summary and events; survives a restart of the server.

    Writes go through a queue to one writer thread that commits them in batches, so
    callers on the event loop or the collector thread never wait for the disk.
    Retention keeps at most `max_runs` runs and `max_events` events, oldest first out.
    """

    def __init__(self, path: str, *, max_runs: int = 200, max_events: int = 2_000_000) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_runs = max_runs
        self.max_events = max_events
        # one connection, used by the writer thread and (under the lock) by readers
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="pipescope-store")
        self._writer.start()

    # writes (any thread; they return at once)
    def save_run(self, summary: dict[str, Any]) -> None:
        self._queue.put(("run", dict(summary)))

    def append_events(self, events: list[Event]) -> None:
        if events:
            self._queue.put(("events", list(events)))

    def record(self, run: BaseRun) -> None:
        """Keep the run's summary and events as they arrive, and its final summary.

        The subscriber runs on the publishing thread; the store only queues for its writer.
        """

        def keep(batch: list[Event]) -> None:
            self.append_events(batch)
            if any(event.get("kind") == "run" for event in batch):
                if run.state.terminal:
                    # The rare receive annotated after it was published: keep its final form.
                    self.append_events(run.amended())
                self.save_run(_record_of(run))

        so_far, _ = run.subscribe(keep)
        keep(so_far)
        if run.state.terminal:
            # It may have ended before `keep` saw it: make the final summary the last one saved.
            self.save_run(_record_of(run))

    def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join()
        with self._lock:
            self._db.close()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            self._commit([b for b in batch if b is not None])
            if None in batch:
                return

    def _commit(self, batch: list[tuple[str, Any]]) -> None:
        flushes: list[threading.Event] = []
        with self._lock:
            self._db.execute("BEGIN")
            for kind, value in batch:
                if kind == "run":
                    self._db.execute(
                        "INSERT INTO runs (id, started, summary) VALUES (?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET summary = excluded.summary",
                        (value["id"], float(value.get("started") or 0.0), json.dumps(value)),
                    )
                elif kind == "events":
                    self._db.executemany(
                        "INSERT OR REPLACE INTO events (run, seq, body) VALUES (?, ?, ?)",
                        [(e["run"], e["seq"], json.dumps(e, ensure_ascii=False)) for e in value],
                    )
                else:
                    flushes.append(value)
            self._retain()
            self._db.execute("COMMIT")
        for done in flushes:
            done.set()

    def _retain(self) -> None:
        (runs,) = self._db.execute("SELECT COUNT(*) FROM runs").fetchone()
        if runs > self.max_runs:
            self._drop_oldest(runs - self.max_runs)
        while True:
            (events,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            (runs,) = self._db.execute("SELECT COUNT(*) FROM runs").fetchone()
            if events <= self.max_events or runs <= 1:
                return
            self._drop_oldest(1)

    def _drop_oldest(self, count: int) -> None:
        ids = [row[0] for row in self._db.execute(
            "SELECT id FROM runs ORDER BY started, id LIMIT ?", (count,)
        )]  # fmt: skip
        for run_id in ids:
            self._db.execute("DELETE FROM events WHERE run = ?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # reads (any thread)
    def runs(self) -> list[dict[str, Any]]:
        """Every stored run's summary, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT summary FROM runs ORDER BY started DESC, id").fetchall()
        return [json.loads(row[0]) for row in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT summary FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def events(self, run_id: str) -> list[Event]:
        return list(self.iter_events(run_id))

    def iter_events(self, run_id: str, batch: int = 5000) -> Iterator[Event]:
        """The run's events in `seq` order, read in batches."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, body FROM events WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (run_id, last, batch),
                ).fetchall()
            if not rows:
                return
            for seq, body in rows:
                yield json.loads(body)
                last = seq


def _record_of(run: BaseRun) -> dict[str, Any]:
    summary = run.summary()
    if run.state.terminal:
        summary["analysis"] = run.analysis_snapshot()
    return summary
