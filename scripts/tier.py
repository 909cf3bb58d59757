"""`python scripts/tier.py`: the relay tier on this machine, for a person to look at.

Starts three NATS nodes (the `nats-server` of the dev extra), the embedded PostgreSQL
with the demo seeded, two relays and two edges, prints both edges' demo page URLs and
the process ids to kill for the failure drills (docs/scaling.md), and stops everything
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from statebus import config
from statebus.auth import issue_token
from statebus.serve import DEMO_USER
from statebus.testing.nats_cluster import NatsCluster


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "statebus", *args], env=env, stdout=out, stderr=out
        )


def wait_answering(
    port: int, process: subprocess.Popen[bytes], log: Path, route: str = "/readyz"
) -> None:
    """Until `route` answers 200: /healthz once the process serves, /readyz once it
    delivers (an edge is not ready while it hears no relay)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"statebus on port {port} exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{route}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"statebus on port {port}: {route} not 200 in 60 s; see {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default=os.environ.get("STATEBUS_HOME", ".statebus"))
    parser.add_argument("--port", type=int, default=8000, help="first edge; the second is +1")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    logs = home / "tier-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print("starting 3 NATS nodes...", flush=True)
    cluster = NatsCluster.create(3).start()
    env = {k: v for k, v in os.environ.items() if k != "STATEBUS_DATABASE_URL"}
    env |= {"STATEBUS_HOME": str(home), "STATEBUS_NATS_URL": cluster.url}
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        ports = [args.port, args.port + 1]
        # The first edge starts the embedded PostgreSQL and seeds the demo; the others
        # use the same server (it stops when the last statebus process using it ends).
        first = start(["serve", "--demo", "--port", str(ports[0])], env, logs / "edge1.log")
        processes.append(("edge 1", first))
        wait_answering(ports[0], first, logs / "edge1.log", "/healthz")
        for name in ("r1", "r2"):
            relay = start(["relay", "--name", name], env, logs / f"relay-{name}.log")
            processes.append((f"relay {name}", relay))
        second = start(["serve", "--port", str(ports[1])], env, logs / "edge2.log")
        processes.append(("edge 2", second))
        wait_answering(ports[0], first, logs / "edge1.log")
        wait_answering(ports[1], second, logs / "edge2.log")
        secret = config.load(env).jwt_secret
        assert secret is not None
        token = issue_token(secret, DEMO_USER, ttl=24 * 3600)
        print("\nstatebus relay tier (NATS " + cluster.url + ")")
        for n, port in enumerate(ports, start=1):
            print(f"  edge {n}: http://127.0.0.1:{port}/#token={token}")
        for name, process in processes:
            print(f"  {name}: pid {process.pid}")
        print(f"  logs:   {logs}")
        print(
            f"  change: statebus psql -c \"UPDATE user_subscriptions SET plan = 'viral_surge'"
            f" WHERE user_id = '{DEMO_USER}'\"\n  Ctrl-C stops everything.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        for _name, process in reversed(processes):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
