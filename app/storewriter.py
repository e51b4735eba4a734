"""StoreWriter: the store's one writer thread, committing queued writes in batches."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import zlib
from typing import Any

import orjson

from pipecore.parts import DEFLATE_END, Part, deflated, part_of

Write = tuple[str, Any]
log = logging.getLogger("pipescope.store")


class StoreWriter:
    """Commits the store's queued writes in batches on its own thread, and applies the
    retention (at most `max_runs` runs and `max_events` events, oldest first out)."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.Lock, *, max_runs: int, max_events: int
    ) -> None:
        self._db = db
        self._lock = lock
        self.max_runs = max_runs
        self.max_events = max_events
        # Running counts for retention: counting the table on every commit grows with it.
        self._run_ids = {row[0] for row in self._db.execute("SELECT id FROM runs")}
        (singles,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        (chunked,) = self._db.execute("SELECT TOTAL(count) FROM chunks").fetchone()
        self._event_count = int(singles + chunked)
        # run id -> the largest seq stored: a later event starts a chunk, another replaces
        self._last_seq: dict[str, int] = {}
        self._queue: queue.Queue[Write | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="pipescope-store")
        self._thread.start()

    def put(self, write: Write) -> None:
        """Queue a write: ("run", summary), ("parts", (run id, parts)) or ("flush", event)."""
        self._queue.put(write)

    def close(self) -> None:
        """Commit what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

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
            writes = [b for b in batch if b is not None]
            if not self._committed(writes):
                # One bad write must not end the thread, or nothing would be recorded (and
                # every flush would wait) from then on: the others are committed one by one.
                for write in writes:
                    if not self._committed([write]):
                        log.error("store: a %s write could not be recorded", write[0])
            if None in batch:
                return

    def _committed(self, writes: list[Write]) -> bool:
        """Commit `writes`; on an error roll them back, counts included, and say so."""
        counts = (self._event_count, dict(self._last_seq), set(self._run_ids))
        try:
            self._commit(writes)
        except Exception:
            log.exception("store: a commit failed")
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            self._event_count, self._last_seq, self._run_ids = counts
            return False
        return True

    def _commit(self, batch: list[Write]) -> None:
        flushes: list[threading.Event] = []
        with self._lock:
            self._db.execute("BEGIN")
            for kind, value in batch:
                if kind == "run":
                    self._db.execute(
                        "INSERT INTO runs (id, started, summary) VALUES (?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET summary = excluded.summary",
                        (value["id"], float(value.get("started") or 0.0), _text(value)),
                    )
                    self._run_ids.add(value["id"])
                elif kind == "parts":
                    self._insert_parts(*value)
                else:
                    flushes.append(value)
            self._retain()
            self._db.execute("COMMIT")
        for done in flushes:
            done.set()

    def _insert_parts(self, run_id: str, parts: list[Part]) -> None:
        for part in parts:
            last = self._stored_up_to(run_id)
            if part.first > last:
                self._db.execute(
                    "INSERT OR REPLACE INTO chunks (run, seq, last, count, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, part.first, part.last, part.count, packed(part)),
                )
                self._event_count += part.count
                self._last_seq[run_id] = part.last
                continue
            events = part.events()
            new = [e for e in events if e["seq"] > last]
            again = [e for e in events if e["seq"] <= last]
            if new:
                self._insert_parts(run_id, [part_of(new)])
            # Saved again with more fields (matched after they were published): the
            # later version wins; the count does not change.
            self._db.executemany(
                "INSERT OR REPLACE INTO events (run, seq, body) VALUES (?, ?, ?)",
                [(run_id, e["seq"], _text(e)) for e in again],
            )

    def _stored_up_to(self, run_id: str) -> int:
        last = self._last_seq.get(run_id)
        if last is None:
            (chunked,) = self._db.execute(
                "SELECT MAX(last) FROM chunks WHERE run = ?", (run_id,)
            ).fetchone()
            (single,) = self._db.execute(
                "SELECT MAX(seq) FROM events WHERE run = ?", (run_id,)
            ).fetchone()
            last = self._last_seq[run_id] = max(chunked or 0, single or 0)
        return last

    def _retain(self) -> None:
        if len(self._run_ids) > self.max_runs:
            self._drop_oldest(len(self._run_ids) - self.max_runs)
        while self._event_count > self.max_events and len(self._run_ids) > 1:
            self._drop_oldest(1)

    def _drop_oldest(self, count: int) -> None:
        ids = [row[0] for row in self._db.execute(
            "SELECT id FROM runs ORDER BY started, id LIMIT ?", (count,)
        )]  # fmt: skip
        for run_id in ids:
            (chunked,) = self._db.execute(
                "SELECT TOTAL(count) FROM chunks WHERE run = ?", (run_id,)
            ).fetchone()
            self._db.execute("DELETE FROM chunks WHERE run = ?", (run_id,))
            single = self._db.execute("DELETE FROM events WHERE run = ?", (run_id,)).rowcount
            self._event_count -= int(chunked) + single
            self._last_seq.pop(run_id, None)
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            self._run_ids.discard(run_id)


# A zlib stream's header (deflate, 32 KiB window, fastest level, its check bits).
ZLIB_HEADER = b"\x78\x01"
_OPEN, _CLOSE = deflated(b"["), deflated(b"]")


def packed(part: Part) -> bytes:
    """A part's events as a chunk's body: its JSON array as a zlib stream (a chunk of
    calls shrinks about twentyfold). The stream is made of the part's own compressed
    piece (Part.deflated), which the compressed websocket frames that carry the part
    share: the part is compressed once for both."""
    check = part.array_check().to_bytes(4, "big")
    body = (ZLIB_HEADER, _OPEN, part.deflated(), _CLOSE, DEFLATE_END, check)
    return b"".join(body)


def unpacked(body: str | bytes) -> str | bytes:
    """A chunk's JSON: compressed bodies start with zlib's header byte, JSON with `[`."""
    if isinstance(body, bytes) and body[:1] == b"x":
        return zlib.decompress(body)
    return body


def _text(value: Any) -> str:
    """JSON text of a summary or an event (orjson writes UTF-8, as ensure_ascii=False did)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # An integer past 64 bits or a non-string key, which only the standard library takes.
        return json.dumps(value, ensure_ascii=False)
