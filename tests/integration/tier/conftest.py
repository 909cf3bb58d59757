"""Fixtures of the relay tier tests: a real NATS cluster for each test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from statebus.testing.nats_cluster import NatsCluster
from tests.integration.tier.tier import Edge, Process, Relay, tier_environment


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three JetStream nodes on free loopback ports, stopped and removed afterwards."""
    cluster = NatsCluster.create(3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Tier:
    """Relays and edges started by one test, all stopped at its end."""

    def __init__(self, dsn: str, nats: NatsCluster, home: Path) -> None:
        self.dsn, self.nats, self.home = dsn, nats, home
        self.env = tier_environment(dsn, nats.url, home)
        self.processes: list[Process] = []

    def relay(self, name: str) -> Relay:
        relay = Relay(name, self.env, self.home)
        relay.start()
        self.processes.append(relay)
        return relay

    async def edge(self, name: str) -> Edge:
        edge = Edge(name, self.env, self.home)
        edge.start()
        self.processes.append(edge)
        await edge.wait_ready()
        return edge

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
async def tier(dsn: str, nats_cluster: NatsCluster) -> AsyncIterator[Tier]:
    home = Path(tempfile.mkdtemp(prefix="sbtier", dir="/tmp"))
    running = Tier(dsn, nats_cluster, home)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(home, ignore_errors=True)
