"""A stateful fake of the Stripe API on a local port, for tests, benchmarks and the demo.

The real `stripe` library talks to it through `STRIPE_API_BASE`, so everything between
statebus and Stripe (form encoding, headers, idempotency keys, error mapping) is the
production path. `statebus serve` never starts it; `scripts/fake_stripe.py` runs it.
"""

from statebus.testing.fake_stripe.api import TEST_API_KEY, FakeStripe
from statebus.testing.fake_stripe.signing import make_event, sign_payload

__all__ = ["TEST_API_KEY", "FakeStripe", "make_event", "sign_payload"]
