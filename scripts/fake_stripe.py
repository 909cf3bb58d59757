"""Runs the fake Stripe API (statebus.testing.fake_stripe) with the demo's prices and subscription.

    python scripts/fake_stripe.py [--port 12111] [--webhook-url http://127.0.0.1:8000/v1/stripe/webhook]

Lets `statebus serve --demo` use Stripe without a Stripe account: run this in one shell,
export what it prints in another, then start `statebus serve --demo`. With --webhook-url
every change (an upgrade, a cancel, a checkout paid on the fake's checkout page, a change
in its billing portal) is also posted to statebus as a correctly signed webhook event,
with the STRIPE_WEBHOOK_SECRET it prints; it prints each delivery's status, says why the
server refuses one, and retries refused deliveries as Stripe does. Loopback only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--webhook-url", help="post signed events here on every change")
    args = parser.parse_args()
    fake = FakeStripe()
    fake.start(port=args.port)
    try:
        fake.add_price("price_glow_up", product="prod_glow_up", unit_amount=1900)
        fake.add_price("price_viral_surge", product="prod_viral_surge", unit_amount=4900)
        fake.add_customer("cus_demo", email="demo@statebus.dev")
        fake.add_subscription(
            customer="cus_demo",
            price="price_glow_up",
            sub_id="sub_demo_glow_up",
            metadata={"user_id": DEMO_USER},
        )
        if args.webhook_url:  # after seeding: the seed is not news to statebus
            # Each delivery's status, and why the server refuses (docs/stripe.md).
            fake.send_webhooks(args.webhook_url).report = lambda line: print(line, flush=True)
        exports = f"STRIPE_API_KEY={TEST_API_KEY} STRIPE_API_BASE={fake.url}"
        if fake.webhooks is not None:
            exports += f" STRIPE_WEBHOOK_SECRET={fake.webhooks.secret}"
        print("fake Stripe API (demo customer cus_demo on price_glow_up); export:", flush=True)
        print(f"  export {exports}", flush=True)
        if fake.webhooks is not None:
            print(f"sending signed events to {fake.webhooks.url}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
