"""One holder at a time per key (a user id), waited for without holding anything else.

Billing changes of one user are serialized here, in the process, before a database
connection is taken: thirty queued cancels of one user wait as thirty coroutines, not as
thirty pooled connections blocked on a database lock, so other users' reads still find a
connection. Each wait is bounded; an entry lives only while someone holds or awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class Busy(Exception):
    """The key stayed held past the wait's bound."""


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters: the entry goes when this reaches 0


class KeyLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Keys held or awaited now (0 when idle: nothing accumulates per user)."""
        return len(self._entries)

    def queued(self, key: str) -> int:
        """How many hold or await `key` now."""
        entry = self._entries.get(key)
        return entry.users if entry is not None else 0

    @contextlib.asynccontextmanager
    async def hold(self, key: str, timeout: float) -> AsyncIterator[None]:
        """Holds `key` for the block; raises Busy after `timeout` seconds of waiting."""
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        try:
            try:
                async with asyncio.timeout(timeout):
                    await entry.lock.acquire()
            except TimeoutError:
                raise Busy(key) from None
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
