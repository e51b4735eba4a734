"""Real runs in the page for what an audit found: lanes of a one-way pipe, the deadlock bar in
Chinese, the gauge of a send held up in step mode, and the banners of a killed worker."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import termios
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import page_state, wait_for
from tests.e2e.test_page import run_to_end, wait_state

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp/shots")
TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
# The texts the page draws on its canvases, from now on (the drawing itself is not asserted).
RECORD_TEXT = """() => {
  if (window.__drawnText) return;
  const drawn = new Set();
  window.__drawnText = drawn;
  const fill = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    drawn.add(String(text));
    return fill.call(this, text, ...rest);
  };
}"""
TAKE_TEXT = "() => { const out = [...window.__drawnText]; window.__drawnText.clear(); return out; }"


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_a_one_way_pipe_keeps_its_one_lane_after_the_writers_recv_fails(page: Any) -> None:
    state = run_to_end(page, "one-way")
    (pipe,) = [p for p in state["pipes"] if not p["duplex"]]
    # The writer's recv (and the reader's send) raise OSError: no lane for what is forbidden.
    assert list(pipe["queued"]) == ["b>a"], pipe
    lines = [line for p in state["processes"] for line in p["lines"]]
    assert any("OSError" in line for line in lines), lines
    shoot(page, "audit-one-way-end")


def test_the_deadlock_bar_in_the_live_view_speaks_the_pages_language(page: Any) -> None:
    page.click("[data-action='lang']")
    wait_state(page, lambda s: s["ui"]["lang"] == "zh", "the page in Chinese", timeout=10)
    page.evaluate(RECORD_TEXT)
    run_to_end(page, "deadlock")
    bar = re.compile(r"^死锁：(left|right)（pid \d+）在管道 recv-recv 的 [ab] 端等待 recv")
    drawn = wait_for(
        page,
        TAKE_TEXT,
        lambda texts: any(bar.match(text) for text in texts),
        what="the deadlock bar in Chinese",
    )
    assert not [text for text in drawn if "waits in" in text], drawn
    shoot(page, "audit-zh-deadlock-end")


def kernel_bytes(pid: int) -> int:
    """The most bytes any pipe of process `pid` holds (FIONREAD on a reader opened through
    /proc, which reads nothing)."""
    most = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if not os.readlink(path).startswith("pipe:"):
                continue
            probe = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue  # closed meanwhile
        try:
            raw = fcntl.ioctl(probe, termios.FIONREAD, b"\0\0\0\0")
            most = max(most, struct.unpack("i", raw)[0])
        finally:
            os.close(probe)
    return most


def test_the_gauge_of_a_send_held_up_in_step_mode_says_what_fills_the_pipe(page: Any) -> None:
    """In step mode the reader waits for a Step, so a writer's 64 KiB frame fills the pipe
    and its send waits: the gauge says full, and that the frame being sent fills it."""
    page.set_viewport_size({"width": 1440, "height": 900})
    page.check(".toolbar [data-step-mode]")
    page.evaluate(RECORD_TEXT)
    page.click('[data-run-scenario="race"]')
    step = page.locator(".toolbar [data-action='step']")

    def held(state: dict[str, Any]) -> dict[str, Any] | None:
        """A writer waiting in send while no frame is queued in its pipe's lane, or None."""
        pipes = {p["name"]: p for p in state["pipes"]}
        queued = pipes.get("two writers", {}).get("queued", {}).get("b>a")
        for proc in state["processes"]:
            blocked = proc["blocked"] or {}
            if proc["name"].startswith("writer") and blocked.get("op") == "send_bytes":
                return proc if queued == 0 else None
        return None

    writer = None
    for _ in range(30):
        state = page_state(page)
        writer = held(state)
        if writer is not None:
            break
        started = state["callsStarted"]
        step.wait_for(state="visible")
        wait_for(page, "document.querySelector(\".toolbar [data-action='step']\").disabled",
                 lambda disabled: disabled is False, what="Step to be enabled")  # fmt: skip
        step.click()
        # A Step lets one call start; the run waits before the next one.
        wait_state(page, lambda s, n=started: s["callsStarted"] > n, "the step's call", timeout=30)
    assert writer is not None, "expected a writer to wait in send within 30 steps"
    # The kernel's buffer is full of the waiting frame's first part, though no send returned.
    assert kernel_bytes(writer["pid"]) >= 60 * 1024
    label = "64 KiB full of the frame being sent"  # not "queued 0 B / 64 KiB · full: …"
    wait_for(page, TAKE_TEXT, lambda texts: label in texts, what="the gauge's label")
    shoot(page, "audit-race-step-gauge")
    page.click(".toolbar [data-action='stop']")
    wait_state(page, lambda s: s["status"] in TERMINAL, "the stopped run to end", timeout=60)


def test_a_worker_killed_in_the_eof_scenario_is_told_once(page: Any) -> None:
    assert run_to_end(page, "eof")["status"] == "killed"
    # The banners follow the model on the page's next frame.
    state = wait_state(
        page,
        lambda s: any("main process" in b["text"] for b in s["banners"]),
        "the banners to tell the run's outcome",
        timeout=10,
    )
    kinds = [b["kind"] for b in state["banners"]]
    assert kinds.count("killed") == 1 and "status-killed" not in kinds, kinds
    (killed,) = [b["text"] for b in state["banners"] if b["kind"] == "killed"]
    # The outcome's sentence, which also says how the main process ended.
    assert re.search(r"chatter \(pid \d+\) was killed.*; the main process exited with 0", killed)
    shoot(page, "audit-eof-end")
