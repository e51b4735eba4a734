"""Markup in what a traced program names and prints is shown as text in every view, never run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import StartServer
from tests.e2e.conftest import TERMINAL, VIEWPORT, page_state, wait_for

SHOTS = Path("/tmp/shots")
IMG = '<img src=x onerror="window.__pwned=1">'
SVG = '"><svg onload=window.__pwned=1>'
PIPE = "100.1"
MAIN, CHILD = 100, 101
LATE = 4242  # a process only a deadlock verdict names
# Elements the markup would make if it were parsed, and the flag its handlers would set.
INJECTED = """({
  pwned: window.__pwned,
  elements: Array.from(document.querySelectorAll('[onerror], [onload], img[src="x"]'),
    (node) => node.outerHTML),
})"""


def text_of(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"


def assert_nothing_injected(page: Any) -> None:
    found = page.evaluate(INJECTED)
    assert found == {"pwned": None, "elements": []}, found


def shows(page: Any, selector: str, *texts: str) -> str:
    """Wait until the element's text holds every one of `texts`, literally; return it."""
    shown: str = wait_for(
        page,
        text_of(selector),
        lambda value: all(text in value for text in texts),
        what=f"{selector} to show {texts!r} as text",
    )
    assert_nothing_injected(page)
    return shown


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"injection-{name}.png"))


class Tracer:
    """A traced program streaming into /ws/ingest (see `tracing`): its run and its events."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.ws.send(json.dumps({"type": "start", "name": name}))
        started = json.loads(self.ws.recv(timeout=10))
        assert started["type"] == "started", started
        self.run: str = started["run"]["id"]
        self.seq = 0

    def event(self, kind: str, pid: int, process: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        t = 1_000_000_000 + self.seq * 1_000_000
        return {
            "run": self.run,
            "seq": self.seq,
            "kind": kind,
            "t": t,
            "pid": pid,
            "process": process,
            **fields,
        }

    def call(self, pid: int, end: str, op: str, phase: str, **fields: Any) -> dict[str, Any]:
        process = IMG if pid == MAIN else SVG
        where = {"pipe": PIPE, "pipe_name": IMG, "end": end, "op": op, "phase": phase}
        return self.event("call", pid, process, site=f"{SVG}:7", **where, **fields)

    def send(self, events: list[dict[str, Any]]) -> None:
        self.ws.send(json.dumps({"type": "events", "events": events}))


@contextmanager
def tracing(base: str, name: str) -> Iterator[Tracer]:
    """A program traced elsewhere, named `name`, connected to the server at `base`."""
    with connect(base.replace("http", "ws", 1) + "/ws/ingest", open_timeout=10) as ws:
        yield Tracer(ws, name)


def hostile_program(tracer: Tracer) -> list[dict[str, Any]]:
    """A program whose every name, value, line and error is markup: a message sent and read
    (and found corrupt), one of bytes, two printed lines, an EOFError, and its end."""
    frame = {"nbytes": 40, "preview": IMG, "type": SVG, "hash": "0000abcd"}
    cycle = [
        {"pid": CHILD, "process": SVG, "pipe": PIPE, "pipe_name": IMG, "end": "b", "op": "recv"}
    ]
    eof = {"process": SVG, "error": IMG, "op": "recv", "pipe": IMG, "end": "b"}
    return [
        tracer.event("run", 0, "", state="running"),
        tracer.event("process", MAIN, IMG, op="start"),
        tracer.event(
            "pipe",
            MAIN,
            IMG,
            pipe=PIPE,
            pipe_name=IMG,
            duplex=True,
            transport=SVG,
            capacity=65536,
            site=f"{IMG}:3",
        ),
        tracer.event("process", CHILD, SVG, op="start", parent=MAIN),
        tracer.event("attach", CHILD, SVG, pipe=PIPE, pipe_name=IMG, end="b"),
        tracer.call(MAIN, "a", "send", "end", **frame),
        tracer.call(CHILD, "b", "recv", "begin"),
        tracer.call(
            CHILD,
            "b",
            "recv",
            "end",
            **(frame | {"hash": "ffff0000"}),
            match=6,
            latency_ns=1_000_000,
            corrupt=SVG,
        ),
        tracer.event("verdict", 0, "", verdict="corrupt", message=IMG, pipe=PIPE, end="b"),
        tracer.call(CHILD, "b", "send_bytes", "end", nbytes=12, type=IMG, hash="12345678"),
        tracer.call(
            MAIN,
            "a",
            "recv_bytes",
            "end",
            nbytes=12,
            type=IMG,
            hash="12345678",
            match=10,
            latency_ns=1_000_000,
        ),
        tracer.event("output", CHILD, SVG, stream="stdout", text=IMG),
        tracer.event("output", CHILD, SVG, stream="stderr", text=SVG),
        tracer.call(CHILD, "b", "recv", "error", error_type=IMG, error=SVG),
        tracer.event(
            "verdict",
            0,
            "",
            verdict="eof",
            message=SVG,
            pipe=PIPE,
            end="b",
            reason={"key": "eof", "args": eof},
        ),
        tracer.event("verdict", 0, "", verdict="deadlock", message=IMG, cycle=cycle),
        tracer.event("process", CHILD, SVG, op="exit", exitcode=0),
        tracer.event("process", MAIN, IMG, op="exit", exitcode=1),
        tracer.event(
            "run",
            0,
            "",
            state="failed",
            message=SVG,
            reason={"key": "program_exit", "args": {"program": IMG, "code": 1}},
        ),
    ]


def open_tab(page: Any, tab: str) -> None:
    page.click(f'[data-tab="{tab}"]')


def check_side_tabs(page: Any, view: str) -> None:
    """Every side tab of the run shown: the markup as text, and no element made of it."""
    open_tab(page, "sequence")
    chart = shows(page, "[data-sequence-panel] .seqchart", IMG, SVG)
    # The visible labels begin with the markup itself (cut to their room), not with nothing.
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('.seqchart text'), (node) => node.textContent)"
    )
    assert any(label.startswith("<img src=x") for label in labels), labels
    assert any(label.startswith('"><svg') for label in labels), labels
    # The error's mark: cut to the room beside its lifeline, short of the time column
    # (64 px wide), and whole on hover.
    marks = page.evaluate(
        """Array.from(document.querySelectorAll('.seqchart .seq-mark'), (g) => ({
          title: g.querySelector('title').textContent,
          text: g.querySelector('text').textContent,
          x: g.querySelector('text').getBBox().x,
        }))"""
    )
    assert [mark["title"] for mark in marks] == [f"recv: {IMG} b"], marks
    assert marks[0]["text"].startswith("recv: <img") and marks[0]["text"].endswith("…"), marks
    assert marks[0]["x"] >= 64, marks
    assert "pid 101" in chart
    shoot(page, f"{view}-sequence")
    open_tab(page, "events")
    shows(page, "[data-eventlog-spacer]", IMG, SVG, f"{IMG}: {SVG}")
    shoot(page, f"{view}-events")
    open_tab(page, "output")
    shows(page, "[data-output-panel]", f"{SVG} · pid {CHILD}", f"{IMG}\n{SVG}\n")
    shoot(page, f"{view}-output")
    open_tab(page, "stats")
    shows(page, "[data-stats-panel] .stat-table", IMG)
    # A long pipe name breaks: the table's figures stay inside the panel.
    overflow = page.evaluate(
        """(() => {
          const panel = document.querySelector('[data-stats-panel]').getBoundingClientRect();
          const table = document.querySelector('[data-stats-panel] .stat-table');
          return table.getBoundingClientRect().right - panel.right;
        })()"""
    )
    assert overflow <= 0, f"the statistics table runs {overflow:.0f} px past its panel"
    shoot(page, f"{view}-stats")
    open_tab(page, "message")
    # The corrupt message is picked for the reader: its route, value, type and what is wrong.
    shows(page, "[data-message-panel]", f"{IMG} → {SVG}", f"{IMG} ({SVG})", f": {SVG}")
    shoot(page, f"{view}-message")


@pytest.fixture
def tracer(live_server: str) -> Iterator[Tracer]:
    with tracing(live_server, IMG) as program:
        yield program


def test_markup_a_traced_program_names_and_prints_is_shown_as_text(
    page: Any, tracer: Tracer
) -> None:
    open_tab(page, "runs")
    page.click(f'[data-open-run="{tracer.run}"]')
    wait_for(page, "window.pipescope.state().run", lambda run: run == tracer.run, what="the run")
    events = hostile_program(tracer)
    tracer.send(events)
    state = wait_for(
        page,
        "window.pipescope.state()",
        lambda s: (
            s["status"] in TERMINAL and s["backlog"] == 0 and s["counts"]["events"] == len(events)
        ),
        what="every event of the traced program shown",
    )
    assert state["status"] == "failed"
    assert {p["name"] for p in state["processes"]} == {IMG, SVG}
    assert [p["name"] for p in state["pipes"]] == [IMG]
    # The live view draws on a canvas; around it, the status row and the banners are text.
    shows(page, "[data-status-text]", f"{IMG} exited with code 1")
    shows(page, '[data-banner="deadlock"]', f"{SVG} (pid {CHILD}) waits in recv on pipe {IMG}")
    shows(page, '[data-banner="corrupt"]', IMG)
    shows(page, '[data-banner="eof"]', SVG)
    shows(page, "[data-runs-panel]", IMG)
    shoot(page, "live")
    check_side_tabs(page, "live")

    # The run's record, replayed: the same views are built again from the stored events.
    open_tab(page, "runs")
    page.click(f'.run-row[data-run-id="{tracer.run}"][data-state="failed"] [data-open-run]')
    wait_for(
        page,
        "window.pipescope.state()",
        lambda s: s["view"] == "replay" and s["replay"]["ended"] and s["backlog"] == 0,
        what="the replay played to its end",
    )
    assert {p["name"] for p in page_state(page)["processes"]} == {IMG, SVG}
    shows(page, "[data-replay-label]", IMG)
    shows(page, "[data-status-text]", IMG)
    shoot(page, "replay")
    check_side_tabs(page, "replay")


def test_a_process_a_deadlock_names_by_markup_is_shown_as_text(
    browser: Any, start_server: StartServer
) -> None:
    """A viewer that joins late gets only the newest events; the processes of a deadlock's
    cycle come from the verdict then, and the sequence chart heads them. (A cycle's pid is
    an int: /ws/ingest refuses any other, tests/unit/test_tracing.py.)"""
    server = start_server({"PIPESCOPE_LIVE_EVENTS": "1000"})
    with tracing(server.url, "late viewer") as tracer:
        events = [
            tracer.event("run", 0, "", state="running"),
            tracer.event("process", MAIN, "MainProcess", op="start"),
            tracer.event("pipe", MAIN, "MainProcess", pipe=PIPE, pipe_name="p", duplex=True),
        ]
        events += [
            tracer.event("output", MAIN, "MainProcess", stream="stdout", text=f"line {n}")
            for n in range(1100)
        ]
        cycle = [
            {"pid": LATE, "process": SVG, "pipe": PIPE, "pipe_name": IMG, "end": "a", "op": "recv"}
        ]
        events.append(tracer.event("verdict", 0, "", verdict="deadlock", message="", cycle=cycle))
        tracer.send(events)
        context = browser.new_context(viewport=VIEWPORT, locale="en-US")
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page.goto(server.url + "/")
            wait_for(page, "window.pipescope ? window.pipescope.ready : false", bool, what="hook")
            open_tab(page, "runs")
            page.click(f'[data-open-run="{tracer.run}"]')
            wait_for(
                page,
                "window.pipescope.state()",
                lambda s: (
                    s["window"] is not None and s["deadlock"] is not None and s["backlog"] == 0
                ),
                what="the late viewer's snapshot applied",
            )
            assert LATE in [p["pid"] for p in page_state(page)["processes"]]
            shows(page, "[data-banners]", IMG, SVG)
            open_tab(page, "sequence")
            shows(page, "[data-sequence-panel] .seqchart-head", f"pid {LATE}", SVG)
            shoot(page, "late-sequence")
        finally:
            context.close()
        assert not errors, f"expected no errors in the page, got {errors}"
