"""Open a report in Debian's headless Chromium (what CI installs) and record what a user would
see go wrong: console errors, script errors, and any request at all besides the page itself (a
self-contained report makes none; each is aborted before it leaves, so nothing reaches a network,
and Chromium's own background networking is switched off by its flags)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BROWSERS = ("chromium-headless-shell", "chromium")
_QUIET = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
]


def chromium() -> str:
    found = next((p for p in map(shutil.which, _BROWSERS) if p), None)
    assert found, (
        "Chromium is not installed: apt-get install chromium-headless-shell (the README's test command does)"
    )
    return found


@dataclass
class Opened:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught script errors
    requests: list[str] = field(default_factory=list)  # every URL asked for besides the page


def open_page(path: Path, check: Any, screenshot: Path) -> Opened:
    """Load `path`, run `check(page)` on it, save a full-page screenshot; what went wrong is returned."""
    from playwright.sync_api import sync_playwright

    opened = Opened()
    url = path.resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=_QUIET)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1000, "height": 800})
            page = context.new_page()
            page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: opened.errors.append(str(e)))

            def route(r: Any) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    opened.requests.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            check(page)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return opened
