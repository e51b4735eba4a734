"""The websocket /ws/ingest: a program traced elsewhere streams its events in as a run."""

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app import clientjson
from app.api import VERSION
from app.clientjson import ClientJSONError
from app.live import LiveHub
from app.store import Store
from pipecore.eventcheck import EventError
from pipecore.runs import CapacityError, ExternalRun, RunManager, reason
from pipecore.scenarios import ParamError
from pipecore.scenarios.catalogue import shown

router = APIRouter()
log = logging.getLogger("pipescope.ingest")

MAX_FRAME_BYTES = 1024 * 1024
START_SECONDS = 10.0
# Close codes (RFC 6455): the frame broke the protocol, or was too large; the server
# failed; try again later.
POLICY_VIOLATION = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
# A close frame's reason is at most 123 bytes; the error frame before it says it all.
REASON_BYTES = 120


class IngestRefused(ValueError):
    """A tracer's frame was refused; the connection closes with `code`."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION, detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.detail = detail


def parse_ingest_frame(text: str, expected: str) -> dict[str, Any]:
    """Check one frame from a tracer: a JSON object of type `expected`, within the size cap."""
    size = len(text.encode())
    if size > MAX_FRAME_BYTES:
        raise IngestRefused(
            f"frame too large: expected at most {MAX_FRAME_BYTES} bytes, got {size}", TOO_BIG
        )
    try:
        data = clientjson.loads(text)
    except ClientJSONError as exc:
        raise IngestRefused(f"frame {exc}", detail=text[:200]) from None
    if not isinstance(data, dict):
        raise IngestRefused(f"expected a JSON object, got {type(data).__name__}", detail=text[:200])
    if data.get("type") != expected:
        raise IngestRefused(
            f"expected a frame of type {expected!r}, got {shown(data.get('type'))}",
            detail=text[:200],
        )
    return data


class Ingest:
    """One tracer's connection: the run it feeds, from its `start` frame to its end."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.manager: RunManager = websocket.app.state.manager
        self.store: Store = websocket.app.state.store
        self.hub: LiveHub = websocket.app.state.hub
        self.run: ExternalRun | None = None

    async def serve(self) -> None:
        try:
            await self._serve()
        except WebSocketDisconnect:
            pass  # the tracer left; the run ends below
        except IngestRefused as exc:
            log.warning("ingest refused: %s", exc)
            if self.run is not None:
                self.run.disconnect(
                    f"the tracer's stream was refused: {exc}", reason("refused", error=str(exc))
                )
            await self._refuse(exc)
        except Exception as exc:
            log.exception("ingest failed")
            if self.run is not None:
                error = f"{type(exc).__name__}: {exc}"
                self.run.disconnect(
                    f"the server failed: {error}", reason("collector_failed", error=error)
                )
            await self._refuse(
                IngestRefused(f"internal error: {type(exc).__name__}", INTERNAL_ERROR)
            )
        finally:
            if self.run is not None:
                self.run.disconnect(
                    "disconnected: the tracer left before the program ended",
                    reason("disconnected"),
                )

    async def _serve(self) -> None:
        try:
            first = await asyncio.wait_for(self._receive(), START_SECONDS)
        except TimeoutError:
            raise IngestRefused(f"expected a 'start' frame within {START_SECONDS:g} s") from None
        if first is None:
            return
        start = parse_ingest_frame(first, "start")
        try:
            self.run = run = self.manager.open_external(start.get("name"))
        except ParamError as exc:
            raise IngestRefused(f"start: {exc.message}") from None
        except CapacityError as exc:
            raise IngestRefused(str(exc), TRY_AGAIN_LATER) from None
        self.store.record(run)
        self.hub.watch(run)
        started = {"type": "started", "run": run.summary(), "version": VERSION}
        await self.websocket.send_json(started)
        while not run.state.terminal:
            text = await self._receive()
            if text is None:
                return
            frame = parse_ingest_frame(text, "events")
            try:
                run.ingest(frame.get("events"))
            except EventError as exc:
                raise IngestRefused(f"events: {exc}") from None
        await self.websocket.send_json({"type": "ended", "run": run.summary()})
        await self.websocket.close(code=1000)

    async def _receive(self) -> str | None:
        """The next frame's text; None when the tracer has gone."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            raise IngestRefused("expected a text frame holding JSON, got a binary frame")
        return str(text)

    async def _refuse(self, exc: IngestRefused) -> None:
        frame: dict[str, Any] = {"type": "error", "message": str(exc)}
        if exc.detail is not None:
            frame["detail"] = exc.detail
        reason = str(exc).encode()[:REASON_BYTES].decode(errors="ignore")
        # The tracer may be gone already; then there is nobody left to tell.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.websocket.send_json(frame)
            await self.websocket.close(code=exc.code, reason=reason)


@router.websocket("/ws/ingest")
async def ingest(websocket: WebSocket) -> None:
    """Events from `pipescope trace --server`; Origin and token were checked by AccessGuard."""
    await websocket.accept()
    await Ingest(websocket).serve()
