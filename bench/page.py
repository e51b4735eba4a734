"""The page under a flood in Debian's headless chromium: frames per second and long tasks."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench.server import TERMINAL, serve

# Debian's chromium and its launch arguments, for this benchmark and the browser tests alike.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, from a started Playwright (its sync API)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


# Counts animation frames per second and long tasks. Injected with evaluate, because the
# page's CSP (script-src 'self') refuses inline scripts.
PROBE = """() => {
  const probe = { frames: 0, perSecond: [], longTasks: 0, longMs: 0, worstMs: 0,
                  start: performance.now(), now: 0 };
  let second = performance.now(), inSecond = 0;
  const tick = (now) => {
    probe.frames += 1;
    inSecond += 1;
    if (now - second >= 1000) {
      probe.perSecond.push(inSecond * 1000 / (now - second));
      second = now;
      inSecond = 0;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      probe.longTasks += 1;
      probe.longMs += entry.duration;
      probe.worstMs = Math.max(probe.worstMs, entry.duration);
    }
  }).observe({ type: 'longtask' });
  window.__benchProbe = probe;
}"""
READ = """() => { const p = window.__benchProbe; p.now = performance.now();
  return JSON.parse(JSON.stringify(p)); }"""
RESET = """() => { const p = window.__benchProbe;
  p.frames = 0; p.perSecond = []; p.longTasks = 0; p.longMs = 0; p.worstMs = 0;
  p.start = performance.now(); }"""


def page_under_flood(seconds: float, messages: int) -> dict[str, Any]:
    """Start a flood from the page's own form and measure the page for `seconds`."""
    if not os.access(CHROMIUM, os.X_OK):
        return {"skipped": f"expected chromium at {CHROMIUM}; run `make browser`"}
    from playwright.sync_api import sync_playwright

    with serve() as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="en-US")
            page.goto(server.url)
            page.wait_for_selector(".conn[data-connection='open']")
            page.wait_for_selector('[data-pick="flood"]')
            page.evaluate(PROBE)
            time.sleep(1.2)  # one whole second of the idle page
            idle: dict[str, Any] = page.evaluate(READ)
            page.click('[data-pick="flood"]')
            page.locator('[data-field="messages"] input').fill(str(messages))
            page.evaluate(RESET)
            began = time.monotonic()
            page.click(".toolbar [data-action='run']")
            time.sleep(seconds)
            probe: dict[str, Any] = page.evaluate(READ)
            waited = time.monotonic() - began
            state: dict[str, Any] = page.evaluate("window.pipescope.state()")
            run_id = state.get("run")
            if run_id:
                summary = server.request("GET", f"/api/runs/{run_id}")
                if summary["state"] not in TERMINAL:
                    server.request("POST", f"/api/runs/{run_id}/stop")
                events = summary["events"]
            else:
                events = 0
        finally:
            browser.close()
    per_second = probe["perSecond"]
    elapsed = (probe["now"] - probe["start"]) / 1000  # the page's own clock
    return {
        "seconds": elapsed,
        "seconds_until_page_answered": waited,
        "messages": messages,
        "run_events_meanwhile": events,
        "page_backlog": state.get("backlog"),
        # calls and output lines left out: by the server (thinned batches), by the page
        "page_skipped": state.get("skipped"),
        "fps": probe["frames"] / elapsed,
        "fps_worst_second": min(per_second) if per_second else 0.0,
        "fps_median_second": statistics.median(per_second) if per_second else 0.0,
        "idle_fps": statistics.median(idle["perSecond"]) if idle["perSecond"] else 0.0,
        "long_tasks": probe["longTasks"],
        "long_task_ms": probe["longMs"],
        "long_task_worst_ms": probe["worstMs"],
    }
