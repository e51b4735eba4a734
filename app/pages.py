"""The HTML page: templates/index.html rendered with the scenario gallery and security headers."""

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from app.api import VERSION
from app.settings import Settings
from pipecore.scenarios import SCENARIOS

router = APIRouter(include_in_schema=False)

LANGUAGES = ("en", "zh")
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.\-:\[\]]+$")


def content_security_policy(host: str) -> str:
    """No inline script or style, nothing from other sites; the websocket on this host only."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self' ws://{host} wss://{host}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def page_headers(host: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        # The token may be in the page's URL: never send it on to another site.
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def preferred_language(request: Request) -> str:
    """?lang= first, then the browser's Accept-Language, else English."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


@router.get("/")
def index(request: Request) -> Response:
    """The dashboard page."""
    settings: Settings = request.app.state.settings
    templates: Jinja2Templates = request.app.state.templates
    # The AccessGuard let this request through, so it may have the token for the page's own
    # requests and websocket.
    token = settings.token
    config: dict[str, Any] = {
        "version": VERSION,
        "token": token or "",
        "websocket": "/ws",
        "api": "/api",
        "viewer_fps": settings.viewer_fps,
        "max_runs": settings.max_runs,
    }
    # Flat names for the template's data-* attributes, and the whole as `config`.
    context = {
        **config,
        "config": config,
        "scenarios": [scenario.describe() for scenario in SCENARIOS.values()],
        "lang": preferred_language(request),
    }
    host = request.headers.get("host", "")
    if not HOST_PATTERN.match(host):
        host = f"{settings.host}:{settings.port}"
    return templates.TemplateResponse(request, "index.html", context, headers=page_headers(host))
