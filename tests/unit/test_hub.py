"""The hub's fan-out, latest-wins bounding and cleanup, without a database or sockets."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from statebus.hub import Hub, Subscriber, SubscriberClosed
from statebus.messages import Envelope

DEADLINE = 5.0  # seconds; generous so a slow CI box never flakes, never reached when green


def env(version: int, user_id: str = "u1") -> Envelope:
    return Envelope(user_id=user_id, version=version, state={"v": version})


async def next_within(sub: Subscriber) -> Envelope:
    return await asyncio.wait_for(sub.next(), DEADLINE)


async def test_publish_reaches_only_that_users_subscribers() -> None:
    hub = Hub()
    async with (
        hub.subscribe("u1") as a1,
        hub.subscribe("u1") as a2,
        hub.subscribe("u2") as b,
    ):
        assert hub.publish(env(1, "u1")) == 2
        assert (await next_within(a1)).version == 1
        assert (await next_within(a2)).version == 1
        assert b.pending is None
        assert hub.publish(env(1, "nobody")) == 0
        assert sorted(hub.user_ids()) == ["u1", "u2"]
        assert hub.subscriber_count("u1") == 2
        assert hub.subscriber_count("u2") == 1
        assert hub.subscriber_count("nobody") == 0
        assert hub.subscriber_count() == 3


async def test_latest_wins_and_nothing_older_follows() -> None:
    hub = Hub()
    async with hub.subscribe("u1") as sub:
        for v in (2, 3, 4):
            hub.publish(env(v))
        got = await next_within(sub)
        assert got == env(4)
        assert sub.delivered_version == 4
        assert sub.pending is None
        hub.publish(env(3))
        hub.publish(env(4))
        assert sub.pending is None


async def test_older_or_equal_offers_are_ignored() -> None:
    sub = Subscriber("u1")
    sub.offer(env(5))
    sub.offer(Envelope(user_id="u1", version=5, state="same version, other state"))
    sub.offer(env(4))
    assert sub.pending == env(5)
    assert (await next_within(sub)).version == 5
    sub.offer(env(5))
    sub.offer(env(1))
    assert sub.pending is None


async def test_versions_strictly_increase_for_a_concurrent_reader() -> None:
    hub = Hub()
    final = 2_000
    async with hub.subscribe("u1") as sub:

        async def read_until_final() -> list[int]:
            seen: list[int] = []
            while not seen or seen[-1] < final:
                seen.append((await sub.next()).version)
            return seen

        reader = asyncio.create_task(read_until_final())
        for v in range(1, final + 1):
            hub.publish(env(v))
            hub.publish(env(v - 1))  # a stale duplicate must never surface
            if v % 7 == 0:
                await asyncio.sleep(0)  # let the reader interleave
        seen = await asyncio.wait_for(reader, DEADLINE)
    assert seen == sorted(set(seen))
    assert seen[-1] == final


async def test_notify_between_subscribe_and_initial_read_is_kept() -> None:
    """The socket subscribes, a NOTIFY lands, then its older DB read arrives."""
    hub = Hub()
    async with hub.subscribe("u1") as sub:
        hub.publish(env(8))  # listener, before the socket's SELECT returned
        sub.offer(env(7))  # the socket's snapshot, read just before the commit
        assert (await next_within(sub)).version == 8
        assert sub.pending is None


async def test_initial_read_then_newer_notify_before_first_next() -> None:
    hub = Hub()
    async with hub.subscribe("u1") as sub:
        sub.offer(env(7))
        hub.publish(env(8))
        assert (await next_within(sub)).version == 8


async def test_since_version_filters() -> None:
    hub = Hub()
    async with hub.subscribe("u1", since_version=7) as sub:
        assert sub.delivered_version == 7
        hub.publish(env(6))
        sub.offer(env(7))  # client already has it: the socket sends `current` instead
        assert sub.pending is None
        hub.publish(env(8))
        assert (await next_within(sub)).version == 8


async def test_since_minus_one_delivers_version_zero() -> None:
    hub = Hub()
    async with hub.subscribe("u1", since_version=-1) as sub:
        sub.offer(Envelope(user_id="u1", version=0, state=None))
        assert (await next_within(sub)).version == 0
    async with hub.subscribe("u1") as default_sub:
        default_sub.offer(Envelope(user_id="u1", version=0, state=None))
        assert default_sub.pending is None


async def test_unsubscribes_on_normal_exit() -> None:
    hub = Hub()
    async with hub.subscribe("u1") as sub:
        hub.publish(env(3))
        assert hub.latest_version("u1") == 3
    assert hub.user_ids() == []
    assert hub.subscriber_count() == 0
    assert hub.latest_version("u1") is None
    assert sub.closed
    assert hub.publish(env(4)) == 0


async def test_unsubscribes_on_exception() -> None:
    hub = Hub()
    with pytest.raises(RuntimeError, match="boom"):
        async with hub.subscribe("u1"), hub.subscribe("u1"):
            assert hub.subscriber_count("u1") == 2
            raise RuntimeError("boom")
    assert hub.user_ids() == []
    assert hub.subscriber_count() == 0


async def test_unsubscribes_on_cancellation() -> None:
    hub = Hub()
    waiting = asyncio.Event()

    async def socket() -> None:
        async with hub.subscribe("u1") as sub:
            waiting.set()
            await sub.next()

    task = asyncio.create_task(socket())
    await asyncio.wait_for(waiting.wait(), DEADLINE)
    assert hub.subscriber_count("u1") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    assert hub.user_ids() == []
    assert hub.subscriber_count() == 0


async def test_cancelled_next_keeps_the_pending_envelope() -> None:
    sub = Subscriber("u1")
    waiter = asyncio.create_task(sub.next())
    await asyncio.sleep(0)  # one loop step: the task is now parked in next()
    sub.offer(env(1))  # wakes it, but it is cancelled before it can take the envelope
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, DEADLINE)
    assert sub.pending == env(1)
    assert (await next_within(sub)).version == 1


async def test_close_all_wakes_waiters_and_refuses_new_subscribers() -> None:
    hub = Hub()
    ready = asyncio.Event()
    count = 3

    async def socket(user_id: str) -> object:
        async with hub.subscribe(user_id) as sub:
            if hub.subscriber_count() == count:
                ready.set()
            try:
                await sub.next()
            except SubscriberClosed as exc:
                return exc.reason
            raise AssertionError("next() returned after close_all")

    tasks = [asyncio.create_task(socket(u)) for u in ("u1", "u1", "u2")]
    await asyncio.wait_for(ready.wait(), DEADLINE)
    hub.publish(env(1, "u2"))  # pending is dropped: closing wins over one more snapshot
    hub.close_all("restarting")
    reasons = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
    assert reasons == ["restarting"] * count
    assert hub.user_ids() == []

    async with hub.subscribe("u3") as late:
        with pytest.raises(SubscriberClosed) as info:
            await next_within(late)
        assert info.value.reason == "restarting"
    assert hub.subscriber_count() == 0


async def test_close_drops_pending_and_ignores_later_offers() -> None:
    sub = Subscriber("u1")
    sub.offer(env(1))
    sub.close("bye")
    assert sub.closed
    assert sub.pending is None
    sub.offer(env(2))
    assert sub.pending is None
    with pytest.raises(SubscriberClosed):
        await next_within(sub)


async def test_stalled_subscriber_holds_one_envelope() -> None:
    hub = Hub()
    final = 100_000
    async with hub.subscribe("u1") as stalled, hub.subscribe("u1") as fast:

        async def read_until_final() -> int:
            last = 0
            while last < final:
                got = await fast.next()
                assert got.version > last
                last = got.version
            return last

        reader = asyncio.create_task(read_until_final())
        for v in range(1, final + 1):
            assert hub.publish(env(v)) == 2
            if v % 1_000 == 0:
                await asyncio.sleep(0)
        assert await asyncio.wait_for(reader, DEADLINE) == final
        # Bounded by structure: the only undelivered state is one envelope reference,
        # and the subscriber has no container in which more could pile up.
        assert stalled.pending == env(final)
        assert stalled.delivered_version == 0
        for name in Subscriber.__slots__:
            value = getattr(stalled, name)
            assert not isinstance(value, list | tuple | dict | set | deque | asyncio.Queue)
        assert (await next_within(stalled)).version == final
        assert stalled.pending is None
