"""Browser-test fixtures: Debian's chromium via Playwright on the real server (`live_server`)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.page import CHROMIUM, launch_chromium
from tests.e2e.liveview import REPO, StaticOnly

VIEWPORT = {"width": 1366, "height": 768}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def wait_for(
    page: Any,
    expression: str,
    predicate: Callable[[Any], bool],
    *,
    timeout: float = 20.0,
    what: str = "the condition",
) -> Any:
    """Evaluate `expression` in the page until `predicate` holds on its value; return the value.

    Polls from Python because the page's CSP (script-src 'self') forbids the string
    evaluation that Playwright's wait_for_function relies on.
    """
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if predicate(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"expected {what} within {timeout}s; last value: {value!r}")


def page_state(page: Any) -> dict[str, Any]:
    """The page's read-only state summary (window.pipescope.state())."""
    state: dict[str, Any] = page.evaluate("window.pipescope.state()")
    return state


TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}


def flood_to_the_end(page: Any, messages: int) -> dict[str, Any]:
    """Start a flood of `messages` frames from the page's own form (Flood card, Run) and
    wait until the page shows it ended with nothing left to apply; the page's state."""
    page.click('[data-pick="flood"]')
    page.locator('[data-field="messages"] input').fill(str(messages))
    page.click(".toolbar [data-action='run']")
    state: dict[str, Any] = wait_for(
        page,
        "window.pipescope.state()",
        lambda s: s["run"] is not None and s["status"] in TERMINAL and s["backlog"] == 0,
        timeout=90.0,
        what="the flood to end on the page",
    )
    return state


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright's sync API."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"expected chromium at {CHROMIUM}; run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = launch_chromium(playwright)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A fresh laptop-sized page on the dashboard; fails the test on any page error."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    tab.goto(live_server + "/")
    wait_for(tab, "window.pipescope ? window.pipescope.ready : false", bool, what="the page's hook")
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"expected no errors in the page, got {errors}"


@pytest.fixture(scope="module")
def lv_origin() -> Iterator[str]:
    """A blank page at / that serves the repository's static/ (the live view's modules)."""
    handler = functools.partial(StaticOnly, directory=str(REPO))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="liveview-static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def lv_page(browser: Any, lv_origin: str) -> Iterator[Any]:
    # The session's chromium (conftest.py): one Playwright per test session.
    page = browser.new_page(viewport={"width": 920, "height": 540}, device_scale_factor=2)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{lv_origin}/")
    try:
        yield page
    finally:
        page.close()
    assert errors == [], f"expected no page errors, got {errors}"
