"""The hub's fan-out, latest-wins bounding and cleanup, without a database or sockets.

A `Sink` here records what a socket would have been sent; a gated sink stands for a
socket whose client stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from statebus.hub import Frame, Hub, Subscriber
from tests.helpers import wait_for


def frame(version: int, user_id: str = "u1") -> Frame:
    return Frame(user_id, version, f'{{"v":{version}}}')


class Sink:
    """Records sent texts; while `gate` is clear, a send blocks (a stalled client)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed: list[object] = []

    async def __call__(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)

    def on_close(self, reason: object) -> None:
        self.closed.append(reason)

    def versions(self) -> list[int]:
        return [int(text.split(":")[1].rstrip("}")) for text in self.sent]


def released(sub: Subscriber) -> Subscriber:
    sub.release()
    return sub


def added(hub: Hub, user_id: str, sink: Sink, *, on_close: bool = False) -> Subscriber:
    """Registers a subscriber the way the socket endpoint does (ws.py: `Hub.add`)."""
    sub = Subscriber(user_id, sink, sink.on_close if on_close else None)
    hub.add(sub)
    return sub


async def test_publish_reaches_only_that_users_subscribers() -> None:
    hub = Hub()
    a1, a2, b = Sink(), Sink(), Sink()
    subs = [added(hub, "u1", a1), added(hub, "u1", a2), added(hub, "u2", b)]
    for sub in subs:
        sub.release()
    assert hub.publish(frame(1, "u1")) == 2
    await wait_for(lambda: a1.versions() == [1] and a2.versions() == [1])
    assert b.sent == []
    assert hub.publish(frame(1, "nobody")) == 0
    assert sorted(hub.user_ids()) == ["u1", "u2"]
    assert hub.subscriber_count("u1") == 2
    assert hub.subscriber_count("u2") == 1
    assert hub.subscriber_count("nobody") == 0
    assert hub.subscriber_count() == 3
    assert hub.latest_version("u1") == 1 and hub.latest_version("u2") == -1


async def test_a_stalled_socket_holds_one_frame_and_gets_the_latest() -> None:
    hub, sink = Hub(), Sink()
    sub = released(added(hub, "u1", sink))
    sink.gate.clear()
    hub.publish(frame(1))  # in flight, blocked in the sink
    await asyncio.sleep(0)
    for v in (2, 3, 4):
        hub.publish(frame(v))
    assert sub.pending == frame(4)  # one frame held, the newest
    sink.gate.set()
    await wait_for(lambda: sink.versions() == [1, 4])
    hub.publish(frame(3))
    hub.publish(frame(4))
    assert sub.pending is None and sub.sent_version == 4


async def test_a_stalled_socket_never_delays_another() -> None:
    hub, slow, fast = Hub(), Sink(), Sink()
    slow.gate.clear()
    released(added(hub, "u1", slow))
    released(added(hub, "u1", fast))
    for v in range(1, 50):
        hub.publish(frame(v))
        await wait_for(lambda: fast.versions()[-1:] == [v])  # noqa: B023 (awaited here)
    assert slow.sent == []


async def test_older_or_equal_offers_are_ignored() -> None:
    sub = Subscriber("u1", Sink())
    sub.offer(frame(5))
    sub.offer(Frame("u1", 5, "same version, other text"))
    sub.offer(frame(4))
    assert sub.take() == frame(5)
    sub.offer(frame(5))
    assert sub.pending is None


async def test_held_until_released_so_the_first_message_goes_first() -> None:
    sink = Sink()
    sub = Subscriber("u1", sink)
    sub.offer(frame(3))  # the listener, while the socket reads its current version
    sub.offer(frame(2))  # the socket's own (older) read: ignored
    await asyncio.sleep(0)
    assert sink.sent == []  # nothing is sent before the socket's first message
    assert sub.take() == frame(3)
    released(sub).offer(frame(4))
    await wait_for(lambda: sink.versions() == [4])


async def test_since_version_filters_and_minus_one_sends_version_zero() -> None:
    sub = Subscriber("u1", Sink(), since_version=7)
    sub.offer(frame(7))
    assert sub.take() is None
    sub.offer(frame(8))
    assert sub.take() == frame(8)
    fresh = Subscriber("u1", Sink())
    fresh.offer(frame(0))
    assert fresh.take() == frame(0)


async def test_versions_sent_strictly_increase_under_interleaving() -> None:
    hub, sink = Hub(), Sink()
    released(added(hub, "u1", sink))
    for v in [1, 3, 2, 5, 4, 4, 6, 9, 8, 7, 10]:
        hub.publish(frame(v))
        if v % 3 == 0:
            await asyncio.sleep(0)
    await wait_for(lambda: sink.versions()[-1:] == [10])
    got = sink.versions()
    assert got == sorted(set(got))


@pytest.mark.parametrize("how", ["normal", "exception", "cancel"])
async def test_unsubscribes_however_the_socket_ends(how: str) -> None:
    """The endpoint's shape (ws.py): `add`, then `remove` in a `finally`."""
    hub = Hub()
    entered = asyncio.Event()
    subs: list[Subscriber] = []

    async def hold() -> None:
        sub = added(hub, "u1", Sink())
        subs.append(sub)
        try:
            entered.set()
            if how == "exception":
                raise RuntimeError("socket failed")
            if how == "cancel":
                await asyncio.Event().wait()
        finally:
            hub.remove(sub)

    task = asyncio.create_task(hold())
    await entered.wait()
    if how == "cancel":
        task.cancel()
    expected = (RuntimeError, asyncio.CancelledError)
    with pytest.raises(expected) if how != "normal" else contextlib.nullcontext():
        await task
    assert hub.subscriber_count() == 0 and hub.user_ids() == []
    assert subs[0].closed
    hub.remove(subs[0])  # a second remove does nothing
    assert hub.subscriber_count() == 0


async def test_close_all_tells_every_socket_and_refuses_new_ones() -> None:
    hub, a, b = Hub(), Sink(), Sink()
    s1 = released(added(hub, "u1", a, on_close=True))
    hub.close_all(1012)
    assert a.closed == [1012]
    hub.publish(frame(1))
    s2 = added(hub, "u2", b, on_close=True)
    assert s2.closed and b.closed == [1012]
    hub.remove(s2)
    assert hub.subscriber_count() == 1  # counts fall as sockets actually leave
    hub.remove(s1)
    await asyncio.sleep(0)
    assert a.sent == [] and hub.subscriber_count() == 0


async def test_a_failed_send_closes_the_subscriber_once() -> None:
    hub = Hub()
    reasons: list[object] = []

    async def broken(_text: str) -> None:
        raise OSError("connection reset")

    sub = released(Subscriber("u1", broken, reasons.append))
    hub.add(sub)
    hub.publish(frame(1))
    await wait_for(lambda: sub.closed)
    hub.publish(frame(2))
    assert len(reasons) == 1 and isinstance(reasons[0], OSError)
