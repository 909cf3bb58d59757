"""The one retry delay: exponential, bounded, with full jitter.

Every reconnecting or retrying loop (the LISTEN supervisor, the Python client, the
Stripe worker) uses this, so a fleet restarting after an outage spreads its retries
instead of arriving in waves. `statebus.js` implements the same formula.
"""

from __future__ import annotations

import random


def delay(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    Uniform in [0, min(cap, base * 2 ** (attempt - 1))]: "full jitter", which spreads
    simultaneous retries best for the same mean wait.
    """
    if attempt < 1:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return random.uniform(0.0, ceiling)
