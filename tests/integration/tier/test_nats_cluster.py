"""The NATS test cluster itself: it forms, survives a node killed -9, and restarts it."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.errors
from nats.js import JetStreamContext

from statebus.testing.nats_cluster import NatsCluster


async def acknowledged(js: JetStreamContext, data: bytes) -> int:
    """Publishes until the stream acknowledges (a new stream, or one whose leader died,
    answers once its replicas have elected a leader: a few seconds at most)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            ack = await js.publish("t.a", data, timeout=1, headers={"Nats-Msg-Id": data.decode()})
            return ack.seq
        except (nats.errors.Error, TimeoutError):
            assert time.monotonic() < deadline, "no acknowledgement"
            await asyncio.sleep(0.1)


async def test_cluster_stores_with_three_replicas_and_survives_a_kill(
    nats_cluster: NatsCluster,
) -> None:
    nc = await nats.connect(servers=nats_cluster.url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"], num_replicas=3, storage="memory")
        assert await acknowledged(js, b"1") == 1
        nats_cluster.kill(nats_cluster.nodes[0])
        assert nats_cluster.nodes[0].process is None
        # Two of three replicas are a quorum: the stream goes on storing.
        assert await acknowledged(js, b"2") == 2
        nats_cluster.start_node(nats_cluster.nodes[0])
        assert nats_cluster.nodes[0].process is not None
    finally:
        await nc.close()
