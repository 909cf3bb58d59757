"""The relay's publisher against a real cluster: notifications queued while it was busy
share a message, sequence numbers stay contiguous, the watermark waits for
acknowledgements, a notification that finds it idle goes out alone, and a quiet
publisher sends an empty keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from statebus import natsbus
from statebus.natsbus import Batch
from statebus.relaypublish import PAIRS_PER_MESSAGE, Publisher
from statebus.testing.nats_cluster import NatsCluster


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.02)


async def stream_created(js: JetStreamContext, timeout: float = 60.0) -> None:
    """As the relay does: a cluster just started (or loaded) may not answer the stream's
    creation until its JetStream meta leader is elected; ask again until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await natsbus.ensure_stream(js)
            return
        except (nats.errors.Error, TimeoutError):
            assert time.monotonic() < deadline, f"stream not created in {timeout:.0f} s"
            await asyncio.sleep(0.2)


def seqs(received: list[Batch]) -> set[int]:
    return {batch.seq for batch in received}


def by_seq(received: list[Batch]) -> dict[int, Batch]:
    first: dict[int, Batch] = {}
    for batch in received:
        first.setdefault(batch.seq, batch)
    return first


async def test_queued_notifications_share_messages_in_order(nats_cluster: NatsCluster) -> None:
    servers = nats_cluster.url.split(",")
    relay_nc = await nats.connect(servers=servers[:1], connect_timeout=2)
    edge_nc = await nats.connect(servers=servers[1:2], connect_timeout=2)
    received: list[Batch] = []

    async def on_message(msg: Msg) -> None:
        received.append(natsbus.batch_decoder.decode(msg.data))

    try:
        js = relay_nc.jetstream()
        await stream_created(js)
        await edge_nc.subscribe(natsbus.SUBJECT, cb=on_message)
        await edge_nc.flush()
        publisher = Publisher(js, 7, valid=lambda: True)
        # Queued before the publisher runs, as while it is busy: four notifications (one
        # empty), then one larger than a message, with watermark marks between them.
        publisher.add([("a", 1)])
        publisher.add([])
        publisher.add([("b", 2), ("c", 3)])
        publisher.mark("100")
        big = [(f"u{i}", i) for i in range(2500)]
        publisher.add(big)
        publisher.mark("200")
        assert publisher.watermark() is None  # nothing acknowledged yet
        sending = asyncio.create_task(publisher.run())
        try:
            # A message whose acknowledgement came late is sent again with the same seq
            # (edges keep the first): read each seq once.
            await until(lambda: {1, 2, 3} <= seqs(received), "all pairs")
            first = by_seq(received)
            pairs = [pair for seq in sorted(first) for pair in first[seq].pairs]
            assert pairs == [("a", 1), ("b", 2), ("c", 3), *big]
            assert sorted(first) == [1, 2, 3]  # 2,503 pairs in three messages
            assert all(b.leader == 7 and len(b.pairs) <= PAIRS_PER_MESSAGE for b in received)
            marks: list[str | None] = []

            def recorded_up_to_the_last_mark() -> bool:
                marks.append(publisher.watermark())
                return "200" in marks

            await until(recorded_up_to_the_last_mark, "the watermark after every acknowledgement")
            assert [m for m in marks if m is not None][-1] == "200"
            assert publisher.acked_seq == 3 and publisher.backlog == 0

            # The publisher is idle now: a notification goes out alone, at once.
            publisher.add([("z", 9)])
            await until(lambda: 4 in seqs(received), "the idle notification")
            assert by_seq(received)[4].pairs == [("z", 9)]
            assert seqs(received) == {1, 2, 3, 4}

            # Quiet: a keep-alive is an empty message with the next seq, so an edge that
            # missed the last one sees the jump; not while something is being sent.
            publisher.keep_alive(60.0)
            assert publisher.backlog == 0  # one was made less than 60 s ago
            publisher.keep_alive(0.0)
            await until(lambda: 5 in seqs(received), "the keep-alive")
            assert by_seq(received)[5].pairs == []
            publisher.add([("y", 1)])
            publisher.keep_alive(0.0)  # something is queued: no keep-alive beside it
            await until(lambda: 6 in seqs(received), "the notification after")
            assert by_seq(received)[6].pairs == [("y", 1)]
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    finally:
        await relay_nc.close()
        await edge_nc.close()
