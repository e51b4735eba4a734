"""The page asks for compressed `events` frames, inflates them, and shows what it would without."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.conftest import StartServer
from tests.e2e.conftest import VIEWPORT, flood_to_the_end, wait_for
from tests.e2e.test_page import assert_ping_pong_printed, run_to_end
from tests.e2e.test_page_thinning import get_json, number

SHOTS = Path("/tmp/shots-compress")
FLOOD_MESSAGES = 3000  # four events each: enough frames to race, few enough to end soon
TOKEN = "t0 k&n=?"  # characters a query must keep escaped


@dataclass
class Wire:
    """The websockets a page opened and the messages they received, as Playwright saw them."""

    urls: list[str] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def watch(self, socket: Any) -> None:
        self.urls.append(socket.url)
        socket.on("framereceived", self.received)

    def received(self, payload: bytes | str) -> None:
        if isinstance(payload, bytes):
            self.binary.append(payload)
        else:
            self.text.append(payload)


@dataclass
class WatchedPage:
    page: Any
    wire: Wire


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[WatchedPage]:
    """A laptop-sized page on `url` whose websocket traffic is recorded from the start;
    fails the test on any page error."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    tab = context.new_page()
    wire = Wire()
    errors: list[str] = []
    tab.on("websocket", wire.watch)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    tab.goto(url)
    wait_for(tab, "window.pipescope ? window.pipescope.ready : false", bool, what="the page's hook")
    try:
        yield WatchedPage(tab, wire)
    finally:
        context.close()
    assert not errors, f"expected no errors in the page, got {errors}"


@pytest.fixture
def watched(browser: Any, live_server: str) -> Iterator[WatchedPage]:
    """The dashboard with its websocket traffic recorded."""
    with open_page(browser, live_server + "/") as watched:
        yield watched


def inflated(payload: bytes) -> dict[str, Any]:
    """A binary message as the frame it carries, inflated as raw DEFLATE."""
    frame: dict[str, Any] = json.loads(zlib.decompress(payload, -15))
    return frame


def test_the_page_asks_for_compressed_events_and_receives_them(watched: WatchedPage) -> None:
    page, wire = watched.page, watched.wire
    page.wait_for_selector(".conn[data-connection='open']")
    assert len(wire.urls) == 1, wire.urls
    assert parse_qs(urlsplit(wire.urls[0]).query) == {"compress": ["deflate-raw"]}
    state = run_to_end(page, "ping-pong")
    assert state["status"] == "completed"
    assert wire.binary, "expected the run's events as binary messages"
    for payload in wire.binary:
        assert not payload.startswith(b"{"), f"expected raw DEFLATE, got {payload[:40]!r}"
    frames = [inflated(payload) for payload in wire.binary]
    # The run's snapshot (taken when the page subscribed) and its events frames.
    assert [f["type"] for f in frames][:1] == ["snapshot"]
    assert {f["type"] for f in frames[1:]} == {"events"}
    events = [ev for frame in frames for ev in frame["events"]]
    assert [ev["run"] for ev in events] == [state["run"]] * len(events)
    # The other frames stay text JSON.
    kinds = {json.loads(text)["type"] for text in wire.text}
    assert not kinds & {"events", "snapshot"} and "runs" in kinds, kinds


def test_a_compressed_ping_pong_shows_what_the_run_recorded(
    watched: WatchedPage, live_server: str
) -> None:
    page = watched.page
    state = run_to_end(page, "ping-pong")
    record = get_json(f"{live_server}/api/runs/{state['run']}/events")
    assert state["status"] == "completed" and state["window"] is None
    assert state["counts"]["events"] == len(record)
    # The page's tokens are the record's sends, delivered in the record's order.
    sends = [ev["seq"] for ev in record if ev["kind"] == "call" and ev.get("op") == "send"]
    sends = [seq for seq in sends if any(ev.get("match") == seq for ev in record)]
    assert state["delivered"] == sends, (state["delivered"], sends)
    delivered = {t["seq"]: t for t in state["tokens"] if t["status"] == "delivered"}
    assert [delivered[seq]["preview"] for seq in state["delivered"]] == ["'proc1'", "'proc2'"]
    assert all(t["recvHash"] == t["hash"] for t in delivered.values())
    assert_ping_pong_printed(page)
    page.click("[data-tab='events']")
    log = wait_for(
        page,
        "({...document.querySelector('[data-eventlog]').dataset})",
        lambda data: "total" in data and int(data["total"]) == len(record),
        what=f"the event log to hold the run's {len(record)} events",
    )
    assert int(log["skipped"]) == 0, log
    rows = page.locator("[data-eventlog] .ev").evaluate_all(
        "rows => rows.map((r) => +r.dataset.seq)"
    )
    assert rows == [ev["seq"] for ev in record], "expected the log to list the record, in order"
    page.click("[data-tab='stats']")
    shown = wait_for(
        page,
        "document.querySelector(\"[data-stat='events'] dd\")?.textContent ?? ''",
        lambda text: text != "" and number(text) == len(record),
        what=f"the statistics to count the run's {len(record)} events",
    )
    assert number(shown) == len(record)
    page.click("[data-tab='events']")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "ping-pong-compressed.png"))


def test_a_compressed_flood_is_taken_in_order_to_the_run_totals(
    watched: WatchedPage, live_server: str
) -> None:
    page, wire = watched.page, watched.wire
    state = flood_to_the_end(page, FLOOD_MESSAGES)
    summary = get_json(f"{live_server}/api/runs/{state['run']}")
    assert (state["status"], summary["state"]) == ("completed", "completed")
    assert len(wire.binary) > 1, "expected the flood in several compressed messages"
    # Taken out of order, a later batch would open a gap the model counts as missing events
    # that neither the server nor the page left out; in order, every gap is one of theirs.
    held = state["window"]
    skipped = held["skipped"] if held else 0
    assert skipped == state["skipped"]["server"] + state["skipped"]["page"], (held, state)
    assert state["counts"]["events"] + skipped == summary["events"]
    writer = next(p for p in state["processes"] if p["name"] == "writer")
    assert writer["exited"] and writer["exitcode"] == 0
    assert any(line.startswith(f"writer: {FLOOD_MESSAGES} frames") for line in writer["lines"])
    reader = next(p for p in state["processes"] if p["name"] == "reader")
    assert f"reader: {FLOOD_MESSAGES} frames" in reader["lines"], reader
    assert [p["queued"] for p in state["pipes"]] == [{"b>a": 0}]


READER = """async ({ compressed, messages }) => {
  const { createFrameReader } = await import('/static/js/socket_decode.js');
  const taken = [];
  const reader = createFrameReader((frame) => taken.push(frame.n), { compressed });
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  for (const m of messages) reader.read(m.text ?? bytes(m.binary));
  await new Promise((resolve) => reader.after(resolve));
  return taken;
}"""


def deflated(data: bytes) -> bytes:
    """`data` as a raw DEFLATE stream, as the server compresses an `events` frame."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def events_frame(n: int, events: int) -> bytes:
    call = {"run": "r1", "kind": "call", "op": "send", "preview": "'x'" * 8, "nbytes": 24}
    frame = {"type": "events", "run": "r1", "n": n, "events": [call] * events}
    return json.dumps(frame).encode()


def test_the_frame_reader_takes_every_message_in_the_order_it_arrived(page: Any) -> None:
    # A large compressed frame takes longest to inflate: what follows must wait for it.
    big, small = events_frame(1, 40_000), events_frame(3, 1)
    arrived: list[dict[str, str]] = [
        {"binary": base64.b64encode(deflated(big)).decode()},
        {"text": json.dumps({"type": "runs", "n": 2})},
        {"binary": base64.b64encode(deflated(small)).decode()},
        {"binary": base64.b64encode(b"not deflate at all").decode()},  # skipped
        {"binary": base64.b64encode(deflated(b"{not json")).decode()},  # skipped
        {"text": "{not json"},  # skipped
        {"text": json.dumps({"type": "runs", "n": 4})},
    ]
    taken = page.evaluate(READER, {"compressed": True, "messages": arrived})
    assert taken == [1, 2, 3, 4]
    # Asked for nothing, binary messages are plain UTF-8 JSON, as before.
    plain = [{"binary": base64.b64encode(big).decode()}, {"text": '{"n": 2}'}]
    assert page.evaluate(READER, {"compressed": False, "messages": plain}) == [1, 2]


def test_the_compressed_socket_keeps_the_token_in_its_query(
    browser: Any, start_server: StartServer
) -> None:
    server = start_server({"PIPESCOPE_TOKEN": TOKEN})
    with open_page(browser, f"{server.url}/?token={quote(TOKEN, safe='')}") as watched:
        watched.page.wait_for_selector(".conn[data-connection='open']")
        query = parse_qs(urlsplit(watched.wire.urls[0]).query)
        assert query == {"token": [TOKEN], "compress": ["deflate-raw"]}, watched.wire.urls
