"""Helpers of the live view's browser tests: a blank page serving static/, recorded
event streams, and events built in code."""

import http.server
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHOTS = Path("/tmp/shots")
BLANK = (
    b"<!doctype html><html><head><meta charset='utf-8'>"
    b"<link rel='stylesheet' href='/static/css/liveview.css'></head>"
    b"<body style='margin:0;font-family:sans-serif'>"
    b"<div id='host' style='width:900px;height:520px'></div></body></html>"
)


class StaticOnly(http.server.SimpleHTTPRequestHandler):
    """Serves a blank page at / and the repository's static/ directory, nothing else."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(BLANK)))
            self.end_headers()
            self.wfile.write(BLANK)
        elif self.path.startswith("/static/"):
            super().do_GET()
        else:
            self.send_error(404)


def fixture(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return events


APPLY = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const model = createRunModel();
  model.apply(events);
  return model.state;
}"""


def apply(page: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(APPLY, events)
    return state


def pipe_event(
    *, duplex: bool, capacity: int, name: str = "p", transport: str | None = None
) -> dict[str, Any]:
    """The `pipe` event of pipe 1.1, made by process 1 (seq 1)."""
    event = {"run": "r1", "seq": 1, "kind": "pipe", "t": 0, "pid": 1, "process": "P1"}
    event |= {"pipe": "1.1", "pipe_name": name, "duplex": duplex, "capacity": capacity}
    return event if transport is None else event | {"transport": transport}


def call(seq: int, pid: int, end: str, op: str, **extra: Any) -> dict[str, Any]:
    return {
        "run": "r1",
        "seq": seq,
        "kind": "call",
        "t": seq * 1_000_000,
        "pid": pid,
        "process": f"P{pid}",
        "pipe": "1.1",
        "pipe_name": "p",
        "end": end,
        "op": op,
        "phase": "end",
        **extra,
    }
