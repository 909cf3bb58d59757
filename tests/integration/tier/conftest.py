"""Fixtures of the relay tier tests: a real NATS cluster for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.tier.nats_cluster import NatsCluster


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three JetStream nodes on free loopback ports, stopped and removed afterwards."""
    cluster = NatsCluster.create(3).start()
    try:
        yield cluster
    finally:
        cluster.stop()
