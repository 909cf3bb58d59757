"""Takes docs/demo.png and docs/demo-disconnected.png from the real demo page.

    python scripts/screenshots.py

Runs what the README's walk-through runs: the fake Stripe with the demo customer, then
`statebus serve --demo` (embedded PostgreSQL, a temporary STATEBUS_HOME) configured for
it, and Debian's Chromium through Playwright with two tabs. One tab upgrades; the other
is shot live (demo.png), then once more after the server stops (demo-disconnected.png).
Last it writes docs/screenshots.sha256, the hash of the page's own files that
tests/unit/test_screenshots.py compares, so the page cannot change without new pictures.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from statebus.auth import issue_token
from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe
from statebus.testing.server import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STATIC = ROOT / "server" / "statebus" / "static"
# What the pictures show: the page's own files (statebus.js is the library underneath).
PAGE_FILES = ("index.html", "demo.js", "demo-words.js", "demo.css")
HASH_FILE = DOCS / "screenshots.sha256"
DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"
SECRET = "screenshots-" + "s" * 40
CHROMIUM = "/usr/bin/chromium"
WAIT = 30_000  # ms


def page_hash() -> str:
    digest = hashlib.sha256()
    for name in PAGE_FILES:
        digest.update(name.encode() + b"\0" + (STATIC / name).read_bytes() + b"\0")
    return digest.hexdigest()


def hash_line() -> str:
    return f"{page_hash()}  {' '.join(PAGE_FILES)}\n"


def demo_stripe() -> FakeStripe:
    """The fake Stripe of scripts/fake_stripe.py: the demo customer on Glow Up."""
    fake = FakeStripe()
    fake.start()
    fake.add_price("price_glow_up", product="prod_glow_up", unit_amount=1900)
    fake.add_price("price_viral_surge", product="prod_viral_surge", unit_amount=4900)
    fake.add_customer("cus_demo", email="demo@statebus.dev")
    fake.add_subscription(
        customer="cus_demo",
        price="price_glow_up",
        sub_id="sub_demo_glow_up",
        metadata={"user_id": DEMO_USER},
    )
    return fake


def start_server(home: Path, port: int, fake: FakeStripe) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env.update(
        STATEBUS_HOME=str(home),
        STATEBUS_JWT_SECRET=SECRET,
        STRIPE_API_KEY=TEST_API_KEY,
        STRIPE_API_BASE=fake.url,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "statebus", "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    for line in server.stdout:
        if "serving on" in line:
            return server
    raise SystemExit("statebus serve did not start")


async def shoot(port: int, server: subprocess.Popen[str]) -> None:
    url = f"http://127.0.0.1:{port}/#token={issue_token(SECRET, DEMO_USER, ttl=3600)}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = await browser.new_context(viewport={"width": 1100, "height": 820})
        first, second = await context.new_page(), await context.new_page()
        for page in (first, second):
            await page.goto(url)
            await live_at(page, "1")
        await first.get_by_test_id("upgrade-viral_surge").click()
        await live_at(second, "2")
        await expect(second.get_by_test_id("plan-name")).to_have_text("Viral Surge")
        await expect(second.get_by_test_id("limits")).to_contain_text("Team seats")
        await second.screenshot(path=str(DOCS / "demo.png"), full_page=True)

        server.send_signal(signal.SIGINT)  # Ctrl-C, as the README's step 2 does
        banner = second.get_by_test_id("conn-error")
        await expect(banner).to_contain_text("The server is restarting", timeout=WAIT)
        await expect(second.get_by_test_id("billing-note")).to_contain_text("paused")
        await second.screenshot(path=str(DOCS / "demo-disconnected.png"), full_page=True)
        await browser.close()


async def live_at(page: Page, version: str) -> None:
    await expect(page.get_by_test_id("version")).to_have_text(version, timeout=WAIT)
    await expect(page.get_by_test_id("status")).to_have_attribute("data-status", "live")


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="sbshot", dir="/tmp"))
    fake = demo_stripe()
    port = free_port()
    server = start_server(home, port, fake)
    try:
        asyncio.run(shoot(port, server))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        server.wait(60)
        fake.stop()
        shutil.rmtree(home, ignore_errors=True)
    HASH_FILE.write_text(hash_line(), encoding="utf-8")
    print(f"wrote docs/demo.png, docs/demo-disconnected.png and {HASH_FILE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
