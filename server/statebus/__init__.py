"""statebus: one versioned subscription state per user, pushed from Postgres to every tab.

The public names: `create_app` (a Starlette app to serve or mount), `Session` and
`follow` (the Python socket client), `Envelope` (the state document) and `__version__`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from statebus.app import create_app
from statebus.client import Session, follow
from statebus.core_messages import Envelope

try:
    __version__ = version("statebus")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Envelope", "Session", "__version__", "create_app", "follow"]
