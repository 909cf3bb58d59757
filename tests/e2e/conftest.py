"""A real Chromium (Debian's, via Playwright) driving the demo page against the real server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    WebSocket,
    async_playwright,
)

from statebus.testing.server import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
STATIC = Path(__file__).resolve().parents[2] / "server" / "statebus" / "static"
STATIC_FILES = {
    "/": ("index.html", "text/html"),
    "/statebus.js": ("statebus.js", "text/javascript"),
    "/demo.js": ("demo.js", "text/javascript"),
    "/demo-words.js": ("demo-words.js", "text/javascript"),
    "/demo.css": ("demo.css", "text/css"),
}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                # A page fulfilled by page.route (the cache test loads the page while the
                # server is down) has no address space; Chromium's Local Network Access
                # checks then block its WebSocket to 127.0.0.1 (ERR_BLOCKED_BY_LOCAL_
                # NETWORK_ACCESS_CHECKS). Pages served by the server itself are unaffected.
                "--disable-features=LocalNetworkAccessChecks",
            ],
        )
        yield launched
        await launched.close()


@dataclass
class Tabs:
    """Pages (tabs) of one browser context, i.e. one browser profile sharing
    localStorage, BroadcastChannel and Web Locks. Counts every real WebSocket."""

    context: BrowserContext
    server: RunningServer
    sockets: list[WebSocket] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self, user_id: str, *, static_from_disk: bool = False) -> Page:
        page = await self.context.new_page()
        page.on("websocket", lambda ws: self.sockets.append(ws))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        if static_from_disk:
            # Lets a page load while the server is down; WebSockets are not routed.
            await page.route(f"{self.server.http}/*", serve_static)
        token = self.server.token(user_id)
        await page.goto(f"{self.server.http}/#token={token}")
        return page

    def socket_urls(self) -> list[str]:
        return [ws.url for ws in self.sockets]


async def serve_static(route: Route) -> None:
    path = "/" + route.request.url.split("/", 3)[3].split("?")[0].split("#")[0]
    if path not in STATIC_FILES:
        await route.fallback()
        return
    name, content_type = STATIC_FILES[path]
    await route.fulfill(status=200, body=(STATIC / name).read_bytes(), content_type=content_type)


@contextlib.asynccontextmanager
async def browser_tabs(browser: Browser, server: RunningServer) -> AsyncIterator[Tabs]:
    """A fresh browser profile (own localStorage, locks, channel) against `server`."""
    context = await browser.new_context(viewport={"width": 1100, "height": 820})
    opened = Tabs(context, server)
    try:
        yield opened
    finally:
        await context.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


@pytest.fixture
async def tabs(browser: Browser, server: RunningServer) -> AsyncIterator[Tabs]:
    async with browser_tabs(browser, server) as opened:
        yield opened


@pytest.fixture
async def stripe_tabs(browser: Browser, app: RunningServer) -> AsyncIterator[Tabs]:
    """Tabs against a server whose Stripe is the fake API."""
    async with browser_tabs(browser, app) as opened:
        yield opened
