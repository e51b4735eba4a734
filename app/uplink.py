"""`pipescope trace --server`: a traced program's events streamed live to a server's /ws/ingest."""

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pipecore.eventcheck import TERMINAL_STATES
from pipecore.export import event_json

Event = dict[str, Any]

# Frames stay well under the server's 1 MiB cap (app/ingest.py MAX_FRAME_BYTES).
FRAME_BUDGET = 512 * 1024
FRAME_EVENTS = 5000
OPEN_SECONDS = 5.0
REPLY_SECONDS = 10.0


class UplinkError(RuntimeError):
    """The server could not be reached, or it refused the run; the message says which."""


def ingest_url(server: str) -> str:
    """The ingest websocket of a server given as http(s)://host:port[/prefix] (or ws(s)://)."""
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise UplinkError(f"expected a server URL like http://127.0.0.1:8000, got {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/ingest", "", ""))


def event_frames(batch: list[Event]) -> Iterator[str]:
    """`events` frames holding `batch` in order, each within the frame budget (bytes)."""
    texts: list[bytes] = []
    size = 0
    for event in batch:
        text = event_json(event)
        if texts and (size + len(text) > FRAME_BUDGET or len(texts) >= FRAME_EVENTS):
            yield _events_frame(texts)
            texts, size = [], 0
        texts.append(text)
        size += len(text) + 1
    if texts:
        yield _events_frame(texts)


def _events_frame(texts: list[bytes]) -> str:
    return (b'{"type":"events","events":[' + b",".join(texts) + b"]}").decode()


class Uplink:
    """One tracer's connection: `open` registers the run, `send` streams, `close` ends it.

    `send` only queues: a sender thread writes to the socket, so a slow network never holds
    up the draining of the program's telemetry. When the connection fails the program runs
    on; one line on `err` says so and the rest of the events stay local.
    """

    def __init__(self, server: str, *, token: str | None, name: str, err: TextIO) -> None:
        self.server = server
        self.token = token
        self.name = name
        self.err = err
        self.problem: str | None = None
        self._ws: ClientConnection | None = None
        self._queue: queue.Queue[list[str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ended = False  # the program's terminal `run` event was sent

    def open(self) -> dict[str, Any]:
        """Connect and start the run; return the server's summary of it (its `id` first)."""
        url = ingest_url(self.server)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = connect(
                url, additional_headers=headers, open_timeout=OPEN_SECONDS, close_timeout=2
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = ": check --token" if status in (401, 403) else ""
            raise UplinkError(
                f"{self.server} refused the connection (HTTP {status}){hint}"
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise UplinkError(f"cannot reach {self.server}: {exc or type(exc).__name__}") from None
        try:
            self._ws.send(json.dumps({"type": "start", "name": self.name}))
            reply = json.loads(self._ws.recv(timeout=REPLY_SECONDS))
        except (ConnectionClosed, OSError, TimeoutError, ValueError) as exc:
            self._ws.close()
            raise UplinkError(f"{self.server} did not start the run: {exc}") from None
        if not isinstance(reply, dict) or reply.get("type") != "started":
            self._ws.close()
            message = reply.get("message") if isinstance(reply, dict) else reply
            raise UplinkError(f"{self.server} refused the run: {message}")
        self._thread = threading.Thread(target=self._send_forever, name="pipescope-uplink")
        self._thread.start()
        summary: dict[str, Any] = reply["run"]
        return summary

    def send(self, batch: list[Event]) -> None:
        self._ended = self._ended or any(
            e.get("kind") == "run" and e.get("state") in TERMINAL_STATES for e in batch
        )
        if self.problem is None:
            # Serialised now, on the tracer's thread: the analysis may still annotate these
            # events later, and must not do so while another thread reads them.
            self._queue.put(list(event_frames(batch)))

    def close(self) -> None:
        """Send what is queued, wait for the server to confirm the end, and disconnect.

        Without the program's end (it could not be started) the server ends the run failed.
        """
        if self._ws is None or self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        if self.problem is None and self._ended:
            self._await_end(self._ws)
        self._ws.close()

    def _send_forever(self) -> None:
        assert self._ws is not None
        while (frames := self._queue.get()) is not None:
            if self.problem is not None:
                continue  # the connection is gone: drain the queue so close() returns
            try:
                for frame in frames:
                    self._ws.send(frame)
            except (ConnectionClosed, OSError) as exc:
                self._lost(exc, "; the program runs on")

    def _await_end(self, ws: ClientConnection) -> None:
        try:
            while True:
                reply = json.loads(ws.recv(timeout=REPLY_SECONDS))
                if reply.get("type") == "ended":
                    return
                if reply.get("type") == "error":
                    self._report(f"{self.server} refused the events: {reply.get('message')}")
                    return
        except (ConnectionClosed, OSError, TimeoutError, ValueError, AttributeError) as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException, then: str = "") -> None:
        reason = exc.rcvd.reason if isinstance(exc, ConnectionClosed) and exc.rcvd else ""
        self._report(f"lost the connection to {self.server}: {reason or exc or 'timed out'}{then}")

    def _report(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
            print(f"pipescope trace: {problem}", file=self.err, flush=True)
