"""Security: loopback by default, Origin and token on every route, nothing from a request runs."""

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from app.main import create_app
from app.settings import Settings
from pipecore.runs import RunManager
from pipecore.scenarios import ParamError
from tests.conftest import LISTENING, ROOT, StartServer
from tests.reliability.conftest import wait_for

TOKEN = "s3cret-token"


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(db=":memory:", token=TOKEN))) as client:
        yield client


def test_serve_listens_on_loopback_unless_told_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESCOPE_")}
    with tempfile.TemporaryDirectory(prefix="pipescope-security-") as tmp:
        env["PIPESCOPE_DB"] = str(Path(tmp) / "runs.sqlite3")
        log = Path(tmp) / "log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: LISTENING.search(log.read_text()) is not None, 30, "serving")
            found = LISTENING.search(log.read_text())
            assert found is not None
            url = found.group(1)
            assert url.startswith("http://127.0.0.1:"), url
            port = int(url.rsplit(":", 1)[1])
            # The kernel's view: the socket is bound to 127.0.0.1 and nothing else.
            bound = [
                line.split()[1]
                for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                + Path("/proc/net/tcp6").read_text().splitlines()[1:]
                if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
            ]
            assert bound == [f"0100007F:{port:04X}"]
        finally:
            server.terminate()
            server.wait(20)


def test_the_container_listens_on_every_interface_explicitly() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^\s*PIPESCOPE_HOST=0\.0\.0\.0\b", dockerfile, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert '"--host", "0.0.0.0"' in cmd.group(1)
    assert Settings().host == "127.0.0.1"


def ws_of(base: str) -> str:
    return base.replace("http", "ws", 1) + "/ws"


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "http://127.0.0.1:1",  # the right host, another port: another origin
        "file://",
    ],
)
def test_the_websocket_refuses_a_foreign_origin(live_server: str, origin: str) -> None:
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(
            live_server.replace("http", "ws", 1) + "/ws", origin=Origin(origin), open_timeout=10
        ),
    ):
        pass
    assert refused.value.response.status_code == 403


def test_an_allowed_origin_is_admitted_and_only_that_one(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_ALLOWED_ORIGINS": "http://localhost:5173"})
    ws_url = server.url.replace("http", "ws", 1) + "/ws"
    with connect(ws_url, origin=Origin("http://localhost:5173"), open_timeout=10) as ws:
        assert '"hello"' in str(ws.recv(timeout=10))
    with (
        pytest.raises(InvalidStatus),
        connect(ws_url, origin=Origin("http://localhost:5174"), open_timeout=10),
    ):
        pass


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI schema (ids filled in), the page and a static file."""
    schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    routes = [("GET", "/"), ("GET", "/static/js/main.js"), ("GET", "/openapi.json")]
    for path, operations in schema["paths"].items():
        for method in operations:
            routes.append((method.upper(), path.replace("{run_id}", "r000000")))
    return routes


def test_with_a_token_set_every_route_but_healthz_needs_it(guarded: TestClient) -> None:
    routes = every_route(guarded)
    assert len(routes) >= 12
    for method, path in routes:
        refused = guarded.request(method, path, json={"on": True})
        if path == "/healthz":
            assert refused.status_code == 200
            continue
        assert refused.status_code == 401, f"{method} {path}: {refused.status_code}"
        assert "token" in refused.json()["detail"]
        wrong = guarded.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, f"{method} {path}"
        admitted = guarded.request(
            method, path, json={"on": True}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert admitted.status_code != 401, f"{method} {path}"
    guarded.cookies.clear()
    with pytest.raises(WebSocketDisconnect), guarded.websocket_connect("/ws"):
        pass
    with pytest.raises(WebSocketDisconnect), guarded.websocket_connect("/ws?token=nope"):
        pass
    with guarded.websocket_connect(f"/ws?token={TOKEN}") as ws:
        assert ws.receive_json()["type"] == "hello"


HOSTILE_SCENARIOS = [
    "os",
    "../x",
    "pipecore.runmain",
    "pipecore.scenarios.pingpong",
    "__import__('os').system('id')",
    "ping-pong; rm -rf /",
    "/etc/passwd",
    "",
]


def test_no_scenario_name_from_a_request_is_imported_or_run(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    before = set(sys.modules)
    with TestClient(create_app(Settings(db=":memory:"))) as client:
        for name in HOSTILE_SCENARIOS:
            response = client.post("/api/runs", json={"scenario": name})
            assert response.status_code == 422, name
            assert response.json()["detail"].startswith(f"unknown scenario {name!r}: expected")
        # Parameters are typed values: text where a number belongs is refused, not evaluated.
        code = f"__import__('pathlib').Path({str(canary)!r}).touch()"
        for params in ({"count": code}, {code: 1}, {"topology": code}):
            response = client.post("/api/runs", json={"scenario": "custom", "params": params})
            assert response.status_code == 422, params
        assert client.get("/api/runs").json() == []
    assert not canary.exists()
    imported = set(sys.modules) - before
    assert not {name for name in imported if name in HOSTILE_SCENARIOS or name == "x"}
    manager = RunManager()
    try:
        for name in HOSTILE_SCENARIOS:
            with pytest.raises(ParamError, match="scenario must be one of"):
                manager.start(name)
        assert manager.list() == []
    finally:
        manager.shutdown()


def test_static_files_never_leave_the_static_directory(live_server: str) -> None:
    for path in ("/static/../app/settings.py", "/static/%2e%2e/app/settings.py",
                 "/static/..%2fapp%2fsettings.py", "/static//etc/passwd"):  # fmt: skip
        response = httpx.get(live_server + path, timeout=10)
        assert response.status_code == 404, path
        assert "SETTINGS" not in response.text and "root:" not in response.text


def inline_scripts(html: str) -> list[str]:
    return [tag for tag in re.findall(r"<script\b[^>]*>", html) if "src=" not in tag]


def test_the_page_has_its_security_headers_and_no_inline_script(live_server: str) -> None:
    response = httpx.get(live_server + "/", timeout=10)
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert inline_scripts(response.text) == []
    assert re.findall(r"\son[a-z]+=", response.text) == []  # no inline event handlers


SCRIPT = "<script>alert(1)</script>"
# A token that ends the attribute the page hands it on in, then opens a script.
MARKUP_TOKEN = '"><script>alert(1)</script>'


class BodyAttributes(HTMLParser):
    """The attributes of a page's <body>, as a browser reads them (entities decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.found = dict(attrs)


def test_every_template_of_the_page_is_autoescaped() -> None:
    env = create_app(Settings(db=":memory:")).state.templates.env
    names = env.list_templates()
    assert {"base.html", "index.html", "_partials.html"} <= set(names)
    for name in names:
        escapes = env.autoescape(name) if callable(env.autoescape) else env.autoescape
        assert escapes is True, f"expected {name} to be autoescaped, got {escapes!r}"
    macro = env.get_template("_partials.html").module.tab(SCRIPT, SCRIPT, SCRIPT)
    assert "<script>" not in str(macro) and "&lt;script&gt;" in str(macro)


def test_what_a_request_carries_never_reaches_the_page_unescaped() -> None:
    """The page hands the token the request carried on to its scripts (data-token): markup in
    it stays an attribute's text; the request's other parts never reach the page."""
    with TestClient(create_app(Settings(db=":memory:", token=MARKUP_TOKEN))) as client:
        page = client.get(
            "/",
            params={"token": MARKUP_TOKEN, "lang": SCRIPT, "scenario": SCRIPT},
            headers={"Host": SCRIPT, "Accept-Language": SCRIPT},
        )
        assert page.status_code == 200
        assert "<script>alert" not in page.text and inline_scripts(page.text) == []
        body = BodyAttributes()
        body.feed(page.text)
        assert body.found["data-token"] == MARKUP_TOKEN
        assert body.found["data-lang"] == "en"
        client.cookies.clear()
        authorised = {"Authorization": f"Bearer {MARKUP_TOKEN}"}
        # The echo in an error is JSON, which a browser is told never to sniff as a page.
        for request in (
            {"scenario": SCRIPT},
            {"scenario": "custom", "params": {"topology": SCRIPT}},
            {"scenario": "custom", "params": {SCRIPT: 1}},
        ):
            echo: Any = client.post("/api/runs", json=request, headers=authorised)
            assert echo.status_code == 422
            assert echo.headers["content-type"] == "application/json"
            assert echo.headers["x-content-type-options"] == "nosniff"
            # and the echo itself holds no markup: <, > and & are \u escapes in the JSON
            assert b"<script>" not in echo.content
            if request["scenario"] == SCRIPT:  # echoed, as an escape that parses back to the text
                assert b"\\u003cscript\\u003e" in echo.content
                assert SCRIPT in echo.json()["detail"]
