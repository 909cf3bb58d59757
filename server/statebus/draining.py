"""uvicorn's server with a drain: on SIGTERM, say "not ready" while still listening.

uvicorn stops accepting connections the moment it is told to exit, so a load balancer
polling `/readyz` sees 200 and then "connection refused". Here the first SIGTERM (or
Ctrl-C) starts a drain instead: `/readyz` answers 503 `shutting down`, every socket is
closed with 1012 (clients reconnect elsewhere with `since`), HTTP is still served, and
only after `drain_seconds` does uvicorn's own graceful shutdown begin. A second signal
ends the drain at once.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from statebus.runtime import Runtime

log = logging.getLogger("statebus.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float = 2.0) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._drain_from: float | None = None
        self._drained = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_from is None and not self.should_exit and self.drain_seconds > 0:
            self._drain_from = time.monotonic()  # on_tick does the rest, on the loop
            # uvicorn raises the signals it caught again once it has stopped (so the
            # process ends the way the signal asked); keep that for this one too.
            self._captured_signals.append(sig)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_from is not None and not self.should_exit:
            if not self._drained:
                self._drained = True
                state = getattr(self.config.app, "state", None)
                runtime = getattr(state, "runtime", None)
                if isinstance(runtime, Runtime):
                    runtime.begin_drain()
                log.info("draining for %.1f s before shutting down", self.drain_seconds)
            if time.monotonic() - self._drain_from >= self.drain_seconds:
                self.should_exit = True
        return await super().on_tick(counter)
