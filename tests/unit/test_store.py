"""The SQLite store keeps runs across a restart, in order, within its retention caps."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from app.store import Store


def _events(run: str, n: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {"run": run, "seq": s, "kind": "output", "t": s, "pid": 7, "text": f"line {s} 收到"}
        for s in range(start, start + n)
    ]


def test_a_run_survives_reopening_the_database(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    store = Store(path)
    store.save_run({"id": "r1", "started": 10.0, "state": "running"})
    store.append_events(_events("r1", 3))
    store.append_events(_events("r1", 2, start=4))
    store.save_run({"id": "r1", "started": 10.0, "state": "completed"})
    store.close()

    again = Store(path)
    try:
        assert again.run("r1") == {"id": "r1", "started": 10.0, "state": "completed"}
        assert [e["seq"] for e in again.events("r1")] == [1, 2, 3, 4, 5]
        assert again.events("r1")[0]["text"] == "line 1 收到"
    finally:
        again.close()


def test_flush_makes_queued_writes_visible(tmp_path: Path) -> None:
    store = Store(":memory:")
    try:
        store.save_run({"id": "r1", "started": 1.0})
        store.append_events(_events("r1", 1000))
        store.flush()
        assert len(store.events("r1")) == 1000
        assert [e["seq"] for e in store.iter_events("r1", batch=7)] == list(range(1, 1001))
    finally:
        store.close()


def test_oldest_runs_go_first_when_over_the_run_cap() -> None:
    store = Store(":memory:", max_runs=2)
    try:
        for i, started in enumerate([3.0, 1.0, 2.0]):
            store.save_run({"id": f"r{i}", "started": started})
            store.append_events(_events(f"r{i}", 2))
        store.flush()
        assert [r["id"] for r in store.runs()] == ["r0", "r2"]
        assert store.events("r1") == []
    finally:
        store.close()


def test_event_cap_drops_whole_old_runs_but_keeps_the_newest() -> None:
    store = Store(":memory:", max_events=10)
    try:
        store.save_run({"id": "old", "started": 1.0})
        store.append_events(_events("old", 8))
        store.save_run({"id": "new", "started": 2.0})
        store.append_events(_events("new", 8))
        store.flush()
        assert [r["id"] for r in store.runs()] == ["new"]
        assert len(store.events("new")) == 8
    finally:
        store.close()


def test_a_resaved_event_replaces_the_first_and_counts_once() -> None:
    store = Store(":memory:", max_events=10)
    try:
        store.save_run({"id": "old", "started": 1.0})
        store.append_events(_events("old", 6))
        annotated = {**_events("old", 1, start=3)[0], "match": 1}
        store.append_events([annotated])
        store.save_run({"id": "new", "started": 2.0})
        store.append_events(_events("new", 4))
        store.flush()
        # 6 + 4 events, not 11: the old run is within the cap and stays.
        assert [r["id"] for r in store.runs()] == ["new", "old"]
        assert store.events("old")[2] == annotated
    finally:
        store.close()


def test_the_event_cap_counts_what_an_earlier_server_left(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    first = Store(path)
    first.save_run({"id": "old", "started": 1.0})
    first.append_events(_events("old", 8))
    first.close()

    second = Store(path, max_events=10)
    try:
        second.save_run({"id": "new", "started": 2.0})
        second.append_events(_events("new", 3))
        second.flush()
        assert [r["id"] for r in second.runs()] == ["new"]
        assert second.events("old") == []
    finally:
        second.close()


def test_events_recorded_one_a_row_by_an_earlier_version_still_read(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    Store(path).close()  # creates the tables
    with sqlite3.connect(path) as db:
        db.execute('INSERT INTO runs VALUES (\'r1\', 1.0, \'{"id": "r1", "started": 1.0}\')')
        db.executemany(
            "INSERT INTO events VALUES ('r1', ?, ?)",
            [(e["seq"], json.dumps(e)) for e in _events("r1", 7)],
        )
    store = Store(path)
    try:
        store.append_events(_events("r1", 3, start=8))
        store.flush()
        assert store.events("r1") == _events("r1", 10)
        assert [e["seq"] for e in store.iter_events("r1", batch=2)] == list(range(1, 11))
    finally:
        store.close()


def test_chunks_are_stored_compressed_and_older_rows_still_read(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    store = Store(path)
    store.save_run({"id": "r1", "started": 10.0, "state": "completed"})
    events = _events("r1", 1000)
    store.append_events(events)
    store.close()
    db = sqlite3.connect(path)
    try:
        (body,) = db.execute("SELECT body FROM chunks WHERE run = 'r1'").fetchone()
        assert isinstance(body, bytes) and body[:1] == b"x"
        assert len(body) * 5 < len(json.dumps(events).encode())
        # A chunk written as JSON text by an earlier version, after it.
        older = [{**e, "seq": e["seq"] + 1000} for e in _events("r1", 2)]
        db.execute(
            "INSERT INTO chunks (run, seq, last, count, body) VALUES ('r1', 1001, 1002, 2, ?)",
            (json.dumps(older),),
        )
        db.commit()
    finally:
        db.close()
    again = Store(path)
    try:
        assert again.events("r1") == events + older
    finally:
        again.close()


def test_a_write_that_cannot_be_recorded_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(":memory:")
    try:
        # Text that is not valid Unicode (a lone surrogate) cannot be stored as UTF-8.
        store.save_run({"id": "r1", "started": 1.0, "state": "x\udce9"})
        store.save_run({"id": "r2", "started": 2.0, "state": "completed"})
        store.append_events(_events("r2", 5))
        flushed = threading.Thread(target=store.flush, daemon=True)
        flushed.start()
        flushed.join(30)
        assert not flushed.is_alive(), "the store's writer stopped"
        assert store.run("r1") is None
        assert store.run("r2") == {"id": "r2", "started": 2.0, "state": "completed"}
        assert [e["seq"] for e in store.events("r2")] == [1, 2, 3, 4, 5]
        assert "a run write could not be recorded" in caplog.text
        # Later writes still go in.
        store.append_events(_events("r2", 2, start=6))
        store.flush()
        assert [e["seq"] for e in store.events("r2")] == [1, 2, 3, 4, 5, 6, 7]
    finally:
        store.close()
