"""The NATS test cluster itself: it forms, survives a node killed -9, and restarts it."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.errors

from tests.integration.tier.nats_cluster import NatsCluster


async def test_cluster_stores_with_three_replicas_and_survives_a_kill(
    nats_cluster: NatsCluster,
) -> None:
    nc = await nats.connect(servers=nats_cluster.url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"], num_replicas=3, storage="memory")
        ack = await js.publish("t.a", b"1")
        assert ack.seq == 1
        nats_cluster.kill(nats_cluster.nodes[0])
        # Two of three replicas are a quorum: once a new stream leader is elected (a few
        # seconds if the dead node led), publishes are acknowledged again.
        deadline = time.monotonic() + 15
        while True:
            try:
                ack = await js.publish("t.a", b"2", timeout=1, headers={"Nats-Msg-Id": "2"})
                break
            except (nats.errors.Error, TimeoutError):
                assert time.monotonic() < deadline, "no acknowledgement after a node was killed"
                await asyncio.sleep(0.1)
        assert ack.seq == 2
        nats_cluster.start_node(nats_cluster.nodes[0])
        assert nats_cluster.nodes[0].process is not None
    finally:
        await nc.close()
