"""The code blocks of README.md and docs/ that claim to run, run (tests/docblocks.py).

README.md is run as a newcomer runs it, block after block: the demo server, the fake
Stripe (its `export` line applied to the shells after it, as the README says to paste
it), the restart, psql, curl, tail and reconcile. Then every runnable block of docs/,
against a demo server. Two things differ from a person's terminal, both so that tests
can run side by side: the port (a free one for 8000, 127.0.0.1 for 0.0.0.0) and the
database (this test's, through STATEBUS_DATABASE_URL). `. .venv/bin/activate` lines are
skipped: the tests already run inside the environment.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.testing.server import free_port
from tests import docblocks
from tests.helpers import wait_for

pytestmark = pytest.mark.asyncio

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"
# Tables the SQL examples name as "your own": made in the example's transaction.
SQL_PRELUDE = """
CREATE TABLE my_table (user_id text NOT NULL REFERENCES users (id), note text);
CREATE TABLE flags (user_id text NOT NULL REFERENCES users (id), name text NOT NULL,
                    PRIMARY KEY (user_id, name));
"""


class Process:
    def __init__(self, block: docblocks.Block, proc: asyncio.subprocess.Process) -> None:
        self.block, self.proc, self.lines = block, proc, list[str]()
        self._reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C, to the whole shell
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        await self._reading


class Shells:
    """The newcomer's shells: one environment, blocks run in order."""

    def __init__(self, dsn: str, home: Path) -> None:
        self.dsn = dsn
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.env = {**env, "STATEBUS_HOME": str(home), "STATEBUS_DATABASE_URL": dsn}
        self.running: list[Process] = []
        self.nudged = 0.0

    def adapt(self, code: str) -> str:
        code = "\n".join(x for x in code.split("\n") if x.strip() != ". .venv/bin/activate")
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        code = code.replace("--port 8000", f"--port {self.port}").replace("0.0.0.0", "127.0.0.1")
        return re.sub(
            r"statebus serve --demo$", f"statebus serve --demo --port {self.port}", code, flags=re.M
        )

    async def _spawn(self, block: docblocks.Block, tmp: Path) -> Process:
        code = self.adapt(block.code)
        if block.language == "python":
            script = tmp / f"block{block.line}.py"
            script.write_text(code, encoding="utf-8")
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-c", code]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=self.env,
            cwd=docblocks.ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        return Process(block, proc)

    async def run(self, block: docblocks.Block, tmp: Path) -> Process:
        """A block that finishes: it must exit 0."""
        process = await self._spawn(block, tmp)
        await asyncio.wait_for(process.proc.wait(), 120)
        await process.stop()
        assert process.proc.returncode == 0, f"{block.where} failed:\n{process.output}"
        return process

    async def start(self, block: docblocks.Block, tmp: Path) -> Process:
        """A block that runs until stopped: a server must answer on its port, anything
        else must print; either way it must still be running."""
        serves = "statebus serve" in block.code or "uvicorn" in block.code
        if serves:  # a new server replaces the running one, as in the README's step 2
            for old in [
                p for p in self.running if "serve" in p.block.code or "uvicorn" in p.block.code
            ]:
                await old.stop()
                self.running.remove(old)
        process = await self._spawn(block, tmp)
        self.running.append(process)

        async def ready() -> bool:
            assert process.proc.returncode is None, f"{block.where} exited:\n{process.output}"
            if not serves:
                if not process.lines:
                    await self.nudge()  # followers print when something changes
                return bool(process.lines)
            try:
                async with httpx.AsyncClient() as http:
                    got = await http.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                return got.status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout=90, what=f"{block.where} to start")
        return process

    async def nudge(self) -> None:
        """One commit for the demo user, at most once a second."""
        if time.monotonic() - self.nudged < 1:
            return
        self.nudged = time.monotonic()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "UPDATE user_usage SET used = used + 1 WHERE user_id = $1", DEMO_USER
            )
        except asyncpg.UndefinedTableError:
            pass  # not migrated yet: the server is still starting
        finally:
            await conn.close()

    def apply_exports(self, output: str) -> None:
        """Pastes the `export ...` line a block printed, as the README asks."""
        for line in output.split("\n"):
            words = shlex.split(line.strip())
            if words[:1] == ["export"]:
                self.env.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]

    async def stop_all(self) -> None:
        for process in reversed(self.running):
            await process.stop()
        self.running.clear()


@pytest.fixture
async def shells(dsn: str) -> AsyncIterator[Shells]:
    home = Path(tempfile.mkdtemp(prefix="sbdoc", dir="/tmp"))
    running = Shells(dsn, home)
    try:
        yield running
    finally:
        await running.stop_all()


async def run_in_order(shells: Shells, blocks: list[docblocks.Block], tmp: Path) -> None:
    for block in blocks:
        if block.language == "sql":
            await run_sql(shells.dsn, block)
        elif block.mode == "until-stopped":
            process = await shells.start(block, tmp)
            if "fake_stripe.py" in block.code:
                await wait_for(exported(process), what="the export line")
                shells.apply_exports(process.output)
        else:
            await shells.run(block, tmp)


def exported(process: Process) -> Callable[[], bool]:
    return lambda: "export " in process.output


async def run_sql(dsn: str, block: docblocks.Block) -> None:
    """In a transaction that is rolled back: examples create roles and change settings."""
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(SQL_PRELUDE)
            code = re.sub(r"^(BEGIN|COMMIT);$", "", block.code, flags=re.M)
            if "$1" in code:
                await conn.fetch(code, [DEMO_USER])
            else:
                await conn.execute(code)
        except asyncpg.PostgresError as exc:
            raise AssertionError(f"{block.where}: {exc}") from None
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def test_the_readme_runs_as_written(shells: Shells, tmp_path: Path) -> None:
    readme = [b for b in docblocks.blocks(docblocks.ROOT / "README.md") if b.runs]
    assert [b.mode for b in readme[:3]] == ["until-stopped"] * 3  # serve, fake Stripe, serve
    await run_in_order(shells, readme, tmp_path)
    fake = next(p for p in shells.running if "fake_stripe.py" in p.block.code)
    # The curl of step 5 changed the subscription: the fake delivered it, accepted.
    await wait_for(lambda: "customer.subscription.updated" in fake.output, what="a webhook")
    await wait_for(
        lambda: re.search(r"customer\.subscription\.updated \S+: 200", fake.output) is not None
    )
    tail = next(p for p in shells.running if "statebus tail" in p.block.code)
    assert re.search(rf"^{DEMO_USER} v\d+ · ", tail.output, re.M), tail.output


async def test_the_docs_run_as_written(shells: Shells, tmp_path: Path) -> None:
    demo = docblocks.Block(
        docblocks.ROOT / "README.md", 0, "sh", "until-stopped", "statebus serve --demo\n"
    )
    await shells.start(demo, tmp_path)
    runnable = [
        b
        for path in docblocks.documents()
        if path.name != "README.md"
        for b in docblocks.blocks(path)
        if b.runs
    ]
    assert runnable
    await run_in_order(shells, runnable, tmp_path)
