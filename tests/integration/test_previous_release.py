"""The compatibility window: the previous release against a database this one migrated.

The previous release (RELEASES) is built from its tag in a throwaway venv
(previous_release.py) and run as a real `statebus serve` while a writer commits through
this release's triggers. It must keep every socket at its user's latest version, or
say in /readyz why it cannot: never stale while ready. Then the upgrade procedure
(docs/upgrading.md) on a database the previous release made: this release migrates it
while the old process serves and a writer commits, the old process drains with 1012,
its clients resume with `since` on this release's process, and every socket ends at its
user's latest version with readiness telling the truth throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.client import Session, SessionClosed
from statebus.migrations import migrate
from tests.helpers import add_user, seed_plans, version_of, wait_for
from tests.integration import previous_release
from tests.integration.serve_process import ServeProcess, serve_process
from tests.pg import PgServer

pytestmark = pytest.mark.asyncio

USERS = ("alice", "bob", "carol", "dave")
# The readiness threshold both processes run with: a notification older than this that
# did not become frames turns /readyz 503, so a lagging process says so early.
THRESHOLD = 2.0


@dataclass(frozen=True)
class Built:
    release: previous_release.Release
    python: Path
    source: Path


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    release = previous_release.previous()
    into = tmp_path_factory.mktemp(f"statebus-{release.tag}")
    python = previous_release.build(release, into)
    yield Built(release, python, into / "source")


async def seed(conn: asyncpg.Connection) -> None:
    await seed_plans(conn)
    for user in USERS:
        await add_user(conn, user)
        await conn.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'n', 0)", user
        )


@asynccontextmanager
async def writing(dsn: str) -> AsyncIterator[list[int]]:
    """A writer committing about 100 transactions a second, round the users, until the
    block ends; yields the running count of its commits."""
    conn = await asyncpg.connect(dsn)
    commits = [0]
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            user = USERS[commits[0] % len(USERS)]
            await conn.execute("UPDATE user_usage SET used = used + 1 WHERE user_id = $1", user)
            commits[0] += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(write())
    try:
        yield commits
    finally:
        stop.set()
        await task
        await conn.close()


@dataclass
class Follower:
    """One user's socket, and every version it received, across reconnects."""

    user: str
    session: Session
    versions: list[int] = field(default_factory=list)
    closed: SessionClosed | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.closed = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self.session.recv(timeout=None)
                if self.versions:  # strictly increasing, a resume's `current` included
                    assert message.version >= self.versions[-1], (self.user, self.versions)
                    if message.version == self.versions[-1]:
                        continue
                self.versions.append(message.version)
        except SessionClosed as exc:
            self.closed = exc

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.session.close()


async def follow_all(serve: ServeProcess) -> dict[str, Follower]:
    followers = {}
    for user in USERS:
        followers[user] = Follower(user, await Session.open(serve.ws, serve.token(user)))
        followers[user].start()
    return followers


@dataclass
class Readiness:
    """/readyz of one process, asked every 50 ms while a drill runs: (when asked, status,
    body)."""

    serve: ServeProcess
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _ask(self) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                asked = time.monotonic()
                try:
                    status, body = await self.serve.readyz(http)
                except httpx.TransportError:
                    return  # the process is gone
                self.answers.append((asked, status, body))
                await asyncio.sleep(0.05)

    def __enter__(self) -> Readiness:
        self.task = asyncio.create_task(self._ask())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self.task is not None
        self.task.cancel()

    def not_ready_without_a_reason(self) -> list[tuple[float, int, str]]:
        return [a for a in self.answers if a[1] != 200 and '"message"' not in a[2]]


async def at_latest_or_not_ready(
    conn: asyncpg.Connection, serve: ServeProcess, followers: dict[str, Follower]
) -> str:
    """After the writes: every socket reaches its user's latest version, or else the
    process says in /readyz why it is not ready. Returns which; a socket still stale
    while /readyz answers 200 fails the test."""
    latest = {user: await version_of(conn, user) for user in USERS}

    def current() -> bool:
        return all(f.versions and f.versions[-1] == latest[u] for u, f in followers.items())

    with contextlib.suppress(AssertionError):
        # Generous on a loaded machine: a lagging process that says so is not a failure.
        await wait_for(current, timeout=15, what="every socket at its user's latest version")
        return "every socket at its user's latest version"
    async with httpx.AsyncClient(timeout=5) as http:
        status, body = await serve.readyz(http)
    behind = {u: (f.versions[-1:], latest[u]) for u, f in followers.items()}
    assert status == 503 and '"message"' in body, f"stale while ready: {behind}, {body}"
    return f"not ready: {body}"


async def shapes(dsn: str, queries: dict[str, str]) -> dict[str, str]:
    """Each query's parameter and result types as PostgreSQL plans it, or why it cannot."""
    conn = await asyncpg.connect(dsn)
    try:
        found = {}
        for name, sql in queries.items():
            try:
                statement = await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                found[name] = f"{type(exc).__name__}: {exc}"
                continue
            parameters = [t.name for t in statement.get_parameters()]
            columns = [(a.name, a.type.name) for a in statement.get_attributes()]
            found[name] = f"{parameters} -> {columns}"
        return found
    finally:
        await conn.close()


async def test_every_query_of_the_previous_release_means_the_same_on_this_schema(
    dsn: str, pg_server: PgServer, previous: Built, tmp_path: Path
) -> None:
    """Expand, then contract: a release's migrations leave every function, table and column
    the previous release reads in place, with the same shape. Each of its queries is
    planned on a database it migrated itself and on this release's: the parameter and
    result types must match (a dropped column, a renamed function, a changed result shape
    fail here, not in production)."""
    theirs = await pg_server.create_database(migrated=False)
    try:
        previous_release.migrate(previous.python, theirs, tmp_path)
        queries = previous_release.queries(previous.source)
        expected = await shapes(theirs, queries)
    finally:
        await pg_server.drop_database(theirs)
    assert len(queries) > 50, sorted(queries)  # the files were found and read
    ours = await shapes(dsn, queries)
    changed = {
        name: (expected[name], ours[name]) for name in queries if ours[name] != expected[name]
    }
    assert not changed, f"{previous.release.tag}'s queries, on its schema and this one: {changed}"


async def test_the_previous_release_serves_a_database_this_release_migrated(
    dsn: str, conn: asyncpg.Connection, previous: Built
) -> None:
    await seed(conn)
    env = {"STATEBUS_READY_THRESHOLD": str(THRESHOLD)}
    async with serve_process(dsn, env=env, python=previous.python) as old:
        async with httpx.AsyncClient(timeout=5) as http:
            build = (await http.get(f"{old.http}/metrics")).text
        assert f'version="{previous.release.tag[1:]}"' in build  # it is the old release
        followers = await follow_all(old)
        with Readiness(old) as readiness:
            async with writing(dsn) as commits:
                await wait_for(lambda: commits[0] >= 100, timeout=60, what="100 commits")
            outcome = await at_latest_or_not_ready(conn, old, followers)
        assert not readiness.not_ready_without_a_reason(), readiness.answers
        # This release writes the format the previous one reads: it kept working.
        assert outcome == "every socket at its user's latest version", outcome

        # A later release's payload format (docs/upgrading.md): the old process cannot
        # read it, says so, and re-reads its users instead of dropping what it named.
        await conn.execute(
            "UPDATE statebus.versions SET version = version + 1 WHERE user_id = 'alice'"
        )
        await conn.execute(
            """SELECT pg_notify('statebus', '{"format": 2, "changes": [["alice", 0]]}')"""
        )
        latest = await version_of(conn, "alice")
        await wait_for(
            lambda: followers["alice"].versions[-1] == latest, what="alice's re-read version"
        )
        async with httpx.AsyncClient(timeout=5) as http:
            status, body = await old.readyz(http)
        assert status == 503 and "undecodable" in body, body
        for follower in followers.values():
            await follower.stop()
    logged = old.log_lines("statebus.listener: undecodable notification")
    assert len(logged) == 1, old.log.read_text()  # one line, however many


@pytest.fixture
async def previous_database(
    pg_server: PgServer, previous: Built, tmp_path: Path
) -> AsyncIterator[str]:
    """A database the previous release created and migrated, seeded."""
    dsn = await pg_server.create_database(migrated=False)
    previous_release.migrate(previous.python, dsn, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        await seed(conn)
    finally:
        await conn.close()
    yield dsn
    await pg_server.drop_database(dsn)


async def test_rolling_restart_from_the_previous_release(
    previous_database: str, previous: Built
) -> None:
    """The upgrade procedure while a writer commits: the previous release serves on the
    schema it made; this release migrates it (step 2); this release's process starts
    beside the old one, which gets SIGTERM and drains with 1012; its clients resume with
    `since` on the new one."""
    dsn = previous_database
    conn = await asyncpg.connect(dsn)
    env = {"STATEBUS_READY_THRESHOLD": str(THRESHOLD), "STATEBUS_DRAIN_SECONDS": "2"}
    async with AsyncExitStack() as running:
        running.push_async_callback(conn.close)
        old = await running.enter_async_context(serve_process(dsn, env=env, python=previous.python))
        followers = await follow_all(old)
        old_ready = running.enter_context(Readiness(old))
        async with writing(dsn) as commits:
            await wait_for(lambda: commits[0] >= 30, timeout=60, what="30 commits")
            migrating = await asyncpg.connect(dsn)
            try:
                await migrate(migrating)  # while the old process serves and the writer writes
            finally:
                await migrating.close()
            migrated_at = commits[0]
            await wait_for(lambda: commits[0] >= migrated_at + 30, timeout=60, what="commits")
            new = await running.enter_async_context(serve_process(dsn, env=env))
            new_ready = running.enter_context(Readiness(new))
            old.proc.send_signal(signal.SIGTERM)
            draining_since: float | None = None
            for follower in followers.values():
                assert follower.task is not None
                await asyncio.wait_for(follower.task, timeout=10)
                assert follower.closed is not None and follower.closed.code == 1012
                draining_since = draining_since or time.monotonic()
                follower.session = await Session.open(
                    new.ws, new.token(follower.user), since=follower.versions[-1]
                )
                follower.start()
            drained = await asyncio.get_running_loop().run_in_executor(None, old.proc.wait)
            assert drained == 0, old.log.read_text()
            resumed_at = commits[0]
            await wait_for(lambda: commits[0] >= resumed_at + 60, timeout=60, what="commits")
        # The writer stopped: every socket reaches its user's latest version on the new one.
        outcome = await at_latest_or_not_ready(conn, new, followers)
        assert outcome == "every socket at its user's latest version", outcome
        for follower in followers.values():
            await follower.stop()
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await new.readyz(http))[0] == 200
    # Readiness told the truth: 503 with a reason whenever not ready, and the old process
    # answered 503 "shutting down" from its first 1012 until its port closed.
    assert not old_ready.not_ready_without_a_reason(), old_ready.answers
    assert not new_ready.not_ready_without_a_reason(), new_ready.answers
    assert draining_since is not None
    during_drain = [a for a in old_ready.answers if a[0] > draining_since]
    assert during_drain, old_ready.answers
    assert all(status == 503 and "shutting down" in body for _, status, body in during_drain), (
        during_drain
    )


async def test_a_clone_without_the_release_fails_saying_how_to_fetch_it() -> None:
    """A shallow clone (no tag, no commit) must not pass the drills by skipping them."""
    missing = previous_release.Release("v0.0.0", "0123456789" * 4)
    with pytest.raises(AssertionError, match="git fetch --unshallow --tags"):
        previous_release.resolve(missing)
