"""The application factory: settings, the run manager's lifespan, access control, JSON errors."""

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import api, ingest, live, pages
from app.bodylimit import BodyLimit
from app.models import SafeJSONResponse
from app.settings import Settings
from app.store import Store, default_db_path
from pipecore.runs import RunManager

ROOT = Path(__file__).resolve().parent.parent
TOKEN_COOKIE = "pipescope_token"
# Requests that only read; others must come from an allowed Origin when a browser sends one.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How much of a refused value an error message repeats.
ECHO_CHARS = 200
OPEN_PATHS = frozenset({"/healthz"})

log = logging.getLogger("pipescope")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the PipeScope application.

    `settings` defaults to the PIPESCOPE_* environment variables. The record store, the run
    manager and the live hub are created by the lifespan (so each app owns its own) and kept
    on `app.state`; leaving the lifespan stops every run, waits for its teardown, and closes
    the store once the runs' last events are in it.
    """
    settings = Settings.from_env() if settings is None else settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(
            settings.db or default_db_path(),
            max_runs=settings.keep_runs,
            max_events=settings.keep_events,
        )
        records = await asyncio.to_thread(store.runs)
        manager = RunManager(
            max_runs=settings.max_runs,
            max_processes=settings.max_processes,
            max_run_seconds=settings.max_run_seconds,
            deadlock_after_ns=int(settings.deadlock_seconds * 1e9),
            live_events=settings.live_events,
            spare_collector=True,
            spare_main=True,
            spares=settings.spares,
        )
        hub = live.LiveHub(manager, store, settings, asyncio.get_running_loop(), records)
        app.state.manager = manager
        app.state.store = store
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.close()
            await asyncio.to_thread(manager.shutdown)
            # After the runs' final events, which the store's writer commits before closing.
            await asyncio.to_thread(store.close)

    app = FastAPI(
        title="PipeScope",
        summary="See multiprocessing.Pipe traffic live.",
        version=api.VERSION,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=ROOT / "templates")
    app.include_router(api.router)
    app.include_router(live.router)
    app.include_router(ingest.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static", check_dir=False), name="static")
    app.add_middleware(BodyLimit)
    app.add_middleware(AccessGuard, settings=settings)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    # FastAPI's default body is a list of dicts; the contract is one readable sentence.
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            at = error.get("loc", ("body", "?"))[-1]
            why = error.get("ctx", {}).get("error", "malformed")
            problems.append(f"body is not JSON: {why} (at character {at})")
            continue
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        got = ""
        if "input" in error and error["input"] is not None:
            shown = repr(error["input"])  # what came, cut short: a body may be megabytes
            got = f", got {shown if len(shown) <= ECHO_CHARS else shown[:ECHO_CHARS] + '…'}"
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}{got}")
    return SafeJSONResponse({"detail": "; ".join(problems)}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
    return SafeJSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> SafeJSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return SafeJSONResponse(
        {"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
    )


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request carrying `origin` may act on the server reached as `host`.

    No Origin header means a non-browser client (curl, a script), which a token guards.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    parts = urlsplit(origin)
    same_host = host is not None and parts.netloc.lower() == host.lower()
    return parts.scheme in ("http", "https") and same_host


class AccessGuard:
    """ASGI middleware: the Origin check and the optional token, for HTTP and the websocket."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        refusal = self._refusal(scope, headers, query)
        if refusal is not None:
            status, message = refusal
            if scope["type"] == "websocket":
                # A refused handshake is answered 403 whatever the reason (a page cannot see
                # the status anyway); the log says why.
                log.warning("websocket refused: %s", message)
                await WebSocket(scope, receive, send).close(code=1008, reason=message)
                return
            response = SafeJSONResponse({"detail": message}, status_code=status)
            if status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        remember = scope["type"] == "http" and self.settings.token is not None and "token" in query
        await self.app(scope, receive, self._decorate(send, remember))

    def _refusal(
        self, scope: Scope, headers: Headers, query: dict[str, list[str]]
    ) -> tuple[int, str] | None:
        checks_origin = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        origin = headers.get("origin")
        if checks_origin and not origin_allowed(
            origin, headers.get("host"), self.settings.allowed_origins
        ):
            return 403, (
                f"origin {origin!r} is not allowed: expected this server's own origin "
                f"or one of PIPESCOPE_ALLOWED_ORIGINS {list(self.settings.allowed_origins)}"
            )
        token = self.settings.token
        if token is None or scope["path"] in OPEN_PATHS:
            return None
        offered = self._offered_token(headers, query)
        if offered is None:
            return 401, "a token is required: send 'Authorization: Bearer <token>' or '?token='"
        if not hmac.compare_digest(offered.encode(), token.encode()):
            return 401, "the token is wrong"
        return None

    @staticmethod
    def _offered_token(headers: Headers, query: dict[str, list[str]]) -> str | None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return credentials.strip()
        if query.get("token"):
            return query["token"][0]
        # The page's own module imports and websocket carry the cookie set when it was opened.
        cookie = SimpleCookie(headers.get("cookie", ""))
        morsel = cookie.get(TOKEN_COOKIE)
        return unquote(morsel.value) if morsel is not None else None

    def _decorate(self, send: Send, remember_token: bool) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if remember_token and self.settings.token is not None:
                    headers.append(
                        "Set-Cookie",
                        f"{TOKEN_COOKIE}={quote(self.settings.token, safe='')}; "
                        "Path=/; HttpOnly; SameSite=Strict",
                    )
            await send(message)

        return send_with_headers
