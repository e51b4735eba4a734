"""BodyLimit: ASGI middleware answering 413 to an HTTP request body past a size cap."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import SafeJSONResponse

# Every body the API takes is a small JSON object (a scenario and its parameters).
MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """Refuses a request whose body is larger than `limit` bytes with 413, by its
    Content-Length before reading it, or once that many bytes have come without one."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send, f"{int(value)} bytes")
                return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer now; the application sees the client leave and what it sends
                    # from then on is dropped.
                    refused = True
                    await self._refuse(scope, receive, send, f"more than {self.limit} bytes")
            return {"type": "http.disconnect"} if refused else message

        async def sending(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, sending)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, got: str) -> None:
        detail = f"request body too large: expected at most {self.limit} bytes, got {got}"
        await SafeJSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
