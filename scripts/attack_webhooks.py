"""Issue 17's F7 against a real `statebus serve`: 50 signed ~1 MiB events at once.

Starts the server with a webhook secret and the fake Stripe (so the inbox worker applies
what is stored), sends EVENTS signed events of just under 1 MiB each, all at once, in the
shape that costs most as Python objects (a long list of small numbers), and samples the
server process's RSS every 20 ms. Prints RSS before, at its peak and after, and the
answers (200 stored, 503 busy).

    python scripts/attack_webhooks.py [--events 50] [--concurrency 8] [--source DIR]

`--source` runs the server from another checkout (e.g. an older commit unpacked with
`git archive`), for a before/after in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe, sign_payload

SECRET = "whsec_attack_script"
MIB = 1024 * 1024


def big_event(n: int) -> bytes:
    obj = {"id": f"in_{n}", "customer": "cus_x", "lines": [0.5] * 205_000}
    event = {"id": f"evt_big_{n}", "object": "event", "type": "invoice.created"}
    return json.dumps({**event, "created": int(time.time()), "data": {"object": obj}}).encode()


def rss(pid: int) -> int:
    """Resident set size in bytes (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


async def sample_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss(pid))
        await asyncio.sleep(0.02)
    return peak


async def run(args: argparse.Namespace, fake: FakeStripe) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="sbwh", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env.update(
        STATEBUS_HOME=str(home),
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_KEY=TEST_API_KEY,
        STRIPE_API_BASE=fake.url,
        STATEBUS_WEBHOOK_CONCURRENCY=str(args.concurrency),
    )
    if args.source:
        env["PYTHONPATH"] = str(Path(args.source) / "server")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statebus", "serve", "--port", str(args.port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    try:
        limits = httpx.Limits(max_connections=args.events)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
            for _ in range(600):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            bodies = [big_event(n) for n in range(args.events)]
            await asyncio.sleep(2)
            before = rss(proc.pid)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(proc.pid, stop))
            started = time.monotonic()

            async def send(body: bytes) -> int:
                headers = {"Stripe-Signature": sign_payload(body, SECRET)}
                try:
                    answer = await http.post("/v1/stripe/webhook", content=body, headers=headers)
                except httpx.HTTPError:
                    return 0
                return answer.status_code

            codes = await asyncio.gather(*(send(body) for body in bodies))
            elapsed = time.monotonic() - started
            await asyncio.sleep(5)  # the worker applies what was stored
            stop.set()
            peak = await sampler
            after = rss(proc.pid)
        return {
            "source": args.source or "this checkout",
            "events": args.events,
            "body_mib": round(len(bodies[0]) / MIB, 2),
            "concurrency": args.concurrency,
            "answers": {str(code): codes.count(code) for code in sorted(set(codes))},
            "seconds": round(elapsed, 2),
            "rss_before_mb": round(before / 1e6),
            "rss_peak_mb": round(peak / 1e6),
            "rss_after_mb": round(after / 1e6),
        }
    finally:
        proc.terminate()
        await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=18210)
    parser.add_argument("--source", help="a checkout to run the server from")
    args = parser.parse_args()
    with FakeStripe() as fake:
        print(json.dumps(asyncio.run(run(args, fake)), indent=2))


if __name__ == "__main__":
    main()
