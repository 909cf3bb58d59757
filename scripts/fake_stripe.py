"""Runs the fake Stripe API (statebus.testing) with the demo's prices and subscription.

    python scripts/fake_stripe.py            # prints the environment to export, then serves

Lets `statebus serve --demo` upgrade without a Stripe account: in one shell run this,
in another export what it prints and start `statebus serve --demo`. Loopback only.
"""

from __future__ import annotations

import signal
import sys
import threading

from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe


def main() -> int:
    with FakeStripe() as fake:
        fake.add_price("price_glow_up", product="prod_glow_up", unit_amount=1900)
        fake.add_price("price_viral_surge", product="prod_viral_surge", unit_amount=4900)
        fake.add_customer("cus_demo", email="demo@statebus.dev")
        fake.add_subscription(
            customer="cus_demo",
            price="price_glow_up",
            sub_id="sub_demo_glow_up",
            metadata={"user_id": "user_2zRnraoVNDAegfHnci1xUMWybwz"},
        )
        print("fake Stripe API (demo customer cus_demo on price_glow_up); export:", flush=True)
        print(f"  export STRIPE_API_KEY={TEST_API_KEY} STRIPE_API_BASE={fake.url}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
