"""Other users' latency during one user's billing storm (issue 17, F2), measured.

    python scripts/billing_storm.py [--cancels 30] [--stripe-latency 0.5] [--repeat 3]

Starts `statebus serve --demo` (its embedded PostgreSQL in a temporary home) on a free
loopback port, in its own process, against the fake Stripe API answering every call
after `--stripe-latency` seconds. Each
round runs the same readers (4 loops of other users' `GET /v1/state`, one of `/readyz`)
first for 5 s alone (baseline), then while the demo user sends `--cancels` concurrent
`POST /v1/billing/cancel`, until the last is answered; it prints p50 / p99 of both,
`/readyz`'s worst, and what the storm was answered. Medians over rounds at the end: this machine is noisy, so read
the storm's figures against the baseline of the same run. `--source DIR` serves the code
of another tree (say, the previous release) for a side-by-side comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from statebus.auth import issue_token
from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe
from statebus.testing.server import free_port

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"
OTHERS = [f"user_storm_other_{n}" for n in range(8)]
READERS = 4
SECRET = "billing-storm-" + "s" * 40


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def reads(http: httpx.AsyncClient, app: Server, until: asyncio.Event) -> list[float]:
    """Latencies of other users' reads, one after another, until the event is set."""
    took: list[float] = []
    n = 0
    while not until.is_set():
        user = OTHERS[n % len(OTHERS)]
        started = time.perf_counter()
        answer = await http.get("/v1/state", headers={"Authorization": f"Bearer {app.token(user)}"})
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
        n += 1
    return took


async def readiness(http: httpx.AsyncClient, until: asyncio.Event) -> list[float]:
    took: list[float] = []
    while not until.is_set():
        started = time.perf_counter()
        assert (await http.get("/readyz")).status_code == 200
        took.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return took


async def load(
    http: httpx.AsyncClient, app: Server, until: asyncio.Event
) -> tuple[list[float], list[float]]:
    """The same readers (READERS of /v1/state, one of /readyz) for baseline and storm."""
    state = [asyncio.create_task(reads(http, app, until)) for _ in range(READERS)]
    ready = asyncio.create_task(readiness(http, until))
    return [t for r in await asyncio.gather(*state) for t in r], await ready


async def round_(app: Server, fake: FakeStripe, cancels: int, latency: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=cancels + READERS + 8)
    auth = {"Authorization": f"Bearer {app.token(DEMO_USER)}"}
    async with httpx.AsyncClient(base_url=app.http, timeout=120, limits=limits) as http:
        fake.set_latency(0.0)
        await http.post("/v1/billing/resume", headers=auth)  # each round starts uncancelled
        quiet = asyncio.Event()
        asyncio.get_running_loop().call_later(5.0, quiet.set)
        baseline, _ = await load(http, app, quiet)

        fake.set_latency(latency)
        done = asyncio.Event()
        measuring = asyncio.create_task(load(http, app, done))
        answers = await asyncio.gather(
            *(http.post("/v1/billing/cancel", headers=auth) for _ in range(cancels))
        )
        done.set()
        during, ready = await measuring
    statuses = Counter(a.status_code for a in answers)
    result = {
        "baseline_p50": pct(baseline, 0.5),
        "baseline_p99": pct(baseline, 0.99),
        "storm_p50": pct(during, 0.5),
        "storm_p99": pct(during, 0.99),
        "storm_reads": float(len(during)),
        "readyz_max": pct(ready, 1.0),
        "answered_200": float(statuses[200]),
        "answered_409": float(statuses[409]),
    }
    print(
        f"round: other users' /v1/state, {READERS} readers: 5 s alone p50"
        f" {result['baseline_p50']:.1f} ms p99 {result['baseline_p99']:.1f} ms | during the"
        f" storm ({len(during)} reads) p50 {result['storm_p50']:.1f} ms p99"
        f" {result['storm_p99']:.1f} ms | /readyz max {result['readyz_max']:.1f} ms | cancels"
        f" answered {dict(statuses)}",
        flush=True,
    )
    return result


class Server:
    """`statebus serve --demo` in a process of its own (so the load generator and the fake
    Stripe in this one do not share its interpreter), on the demo's embedded database."""

    def __init__(self, home: Path, fake: FakeStripe, source: Path | None) -> None:
        self.port = free_port()
        self.tokens: dict[str, str] = {}
        self.http = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
        env.update(
            STATEBUS_HOME=str(home),
            STATEBUS_JWT_SECRET=SECRET,
            STRIPE_API_KEY=TEST_API_KEY,
            STRIPE_API_BASE=fake.url,
        )
        if source is not None:  # another tree's server code (and its sql/), to compare
            env["PYTHONPATH"] = str(source / "server")
        command = [
            sys.executable,
            "-m",
            "statebus.cli",
            "serve",
            "--demo",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)

    def token(self, user_id: str) -> str:
        # One token per user, as a real client keeps its own: signing one per request
        # would spend the load generator's CPU, on the same two cores, inside the figure.
        if user_id not in self.tokens:
            self.tokens[user_id] = issue_token(SECRET, user_id, ttl=3600)
        return self.tokens[user_id]

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.http, timeout=5) as http:
            for _ in range(600):
                if self.proc.poll() is not None:
                    raise RuntimeError("statebus serve exited")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("statebus serve did not become ready in 60 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sbstorm", dir="/tmp") as tmp, FakeStripe() as fake:
        fake.add_price("price_glow_up")
        fake.add_price("price_viral_surge")
        fake.add_subscription(customer="cus_demo", price="price_glow_up", sub_id="sub_demo_glow_up")
        server = Server(Path(tmp), fake, args.source)
        try:
            await server.ready()
            results = [
                await round_(server, fake, args.cancels, args.stripe_latency)
                for _ in range(args.repeat)
            ]
        finally:
            server.stop()
    print(f"medians over {len(results)} round(s):")
    for key in results[0]:
        print(f"  {key}: {statistics.median(r[key] for r in results):.1f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cancels", type=int, default=30)
    parser.add_argument("--stripe-latency", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--source",
        type=Path,
        help="serve another tree's code, e.g. one made by `git archive main | tar -x -C DIR`",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
