"""statebus.keylocks: one holder per key, bounded waits, nothing left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statebus.config import ConfigError, load
from statebus.keylocks import Busy, KeyLocks


async def test_holders_of_one_key_take_turns_in_arrival_order() -> None:
    locks = KeyLocks()
    order: list[int] = []
    release = asyncio.Event()

    async def change(n: int) -> None:
        async with locks.hold("user_a", timeout=5):
            order.append(n)
            if n == 0:
                await release.wait()

    tasks = [asyncio.create_task(change(n)) for n in range(3)]
    while locks.queued("user_a") < 3:
        await asyncio.sleep(0)
    assert order == [0]  # the others wait
    async with locks.hold("user_b", timeout=0.1):  # another key is not held up
        pass
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert len(locks) == 0 and locks.queued("user_a") == 0


async def test_a_wait_past_its_bound_is_busy_and_leaves_nothing() -> None:
    locks = KeyLocks()
    async with locks.hold("user_a", timeout=1):
        with pytest.raises(Busy):
            async with locks.hold("user_a", timeout=0.05):
                pytest.fail("held twice")
        assert locks.queued("user_a") == 1
    assert len(locks) == 0
    async with locks.hold("user_a", timeout=0.05):  # free again
        pass


async def test_a_cancelled_waiter_leaves_nothing() -> None:
    locks = KeyLocks()
    async with locks.hold("user_a", timeout=1):
        waiter = asyncio.create_task(locks.hold("user_a", timeout=5).__aenter__())
        while locks.queued("user_a") < 2:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


def test_lock_settings_are_seconds_within_bounds(tmp_path: Path) -> None:
    base = {"STATEBUS_HOME": str(tmp_path), "STATEBUS_JWT_SECRET": "s" * 40}
    settings = load({**base, "STATEBUS_LOCK_TIMEOUT": "0.5", "STATEBUS_BILLING_WAIT": "2"})
    assert (settings.lock_timeout, settings.billing_wait) == (0.5, 2.0)
    assert (load(base).lock_timeout, load(base).billing_wait) == (5.0, 5.0)
    for bad in ("soon", "0", "-1", "7200"):
        with pytest.raises(ConfigError, match="STATEBUS_LOCK_TIMEOUT"):
            load({**base, "STATEBUS_LOCK_TIMEOUT": bad})
