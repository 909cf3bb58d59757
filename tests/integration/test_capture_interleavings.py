"""Random interleavings of multi-statement transactions, with and without capture.

Hypothesis draws a few transactions (each a few single-row writes over three users and
three tables, one of them joined with statebus.track()) and an order in which their
statements and commits are issued, each transaction on its own connection. The same
schedule runs twice against the real server: with capture, and with the capture
triggers disabled. Properties: capture adds no deadlock the bare schedule does not have,
and each user's versions follow the commit order of the transactions that wrote it.

A step that blocks on a lock is left waiting (seen in pg_stat_activity) and the schedule
goes on with the other transactions; a blocked transaction's later steps wait their turn.
Hypothesis runs in a worker thread with an event loop per example, as in test_fuzz.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import add_user, wait_for

pytestmark = pytest.mark.asyncio

USERS = ("u1", "u2", "u3")
# Few users and several writes each, so that transactions meet often.
WRITES = {
    "usage": "UPDATE user_usage SET used = used + 1 WHERE user_id = $1 AND metric = 'posts'",
    "system": "UPDATE user_system_data SET onboarding_completed = NOT onboarding_completed"
    " WHERE user_id = $1",
    "notes": "UPDATE public.notes SET body = body || 'x' WHERE owner = $1",
}
CAPTURED = ("user_usage", "user_system_data", "public.notes")
EXAMPLES = int(os.environ.get("STATEBUS_FUZZ_EXAMPLES", "25"))
examples = itertools.count()

write = st.tuples(st.sampled_from(sorted(WRITES)), st.sampled_from(USERS))
transactions = st.lists(st.lists(write, min_size=2, max_size=3), min_size=2, max_size=3)
# The case: a version row locked per statement deadlocked these two.
FOUR_STATEMENTS = (
    [[("usage", "u1"), ("usage", "u2")], [("system", "u2"), ("system", "u1")]],
    [0, 1, 0, 1, 0, 1],
)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[list[tuple[str, str]]], list[int]]:
    """Transactions, and the order of their steps: each transaction's writes, then COMMIT."""
    txs = draw(transactions)
    steps = [i for i, tx in enumerate(txs) for _ in range(len(tx) + 1)]
    return txs, draw(st.permutations(steps))


@dataclass
class Outcome:
    committed: list[int] = field(default_factory=list)  # transaction indexes, commit order
    deadlocked: set[int] = field(default_factory=set)


async def run(dsn: str, txs: list[list[tuple[str, str]]], order: list[int], label: str) -> Outcome:
    """Issues the schedule; transaction i is labelled `app:<label>_<i>` (its source)."""
    observer = await asyncpg.connect(dsn)
    conns = [await asyncpg.connect(dsn) for _ in txs]
    outcome = Outcome()
    try:
        for i, conn in enumerate(conns):
            await conn.execute("SET deadlock_timeout = '50ms'")
            await conn.execute("BEGIN")
            await conn.execute(f"SET LOCAL statebus.source = 'app:{label}_{i}'")
        next_step = [0] * len(txs)
        pending: dict[int, asyncio.Task[object]] = {}
        queue = list(order)

        async def settle(i: int) -> None:
            task = pending[i]
            pid = conns[i].get_server_pid()

            async def done_or_blocked() -> bool:
                return task.done() or bool(
                    await observer.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                        pid,
                    )
                )

            await wait_for(done_or_blocked, what=f"transaction {i} to finish or block")

        def reap() -> None:
            for i, task in list(pending.items()):
                if not task.done():
                    continue
                del pending[i]
                error = task.exception()
                if isinstance(error, asyncpg.DeadlockDetectedError):
                    outcome.deadlocked.add(i)
                    next_step[i] = len(txs[i]) + 1  # aborted; rolled back below
                elif error is not None:
                    raise error
                elif next_step[i] == len(txs[i]) + 1:
                    outcome.committed.append(i)

        while queue:
            reap()
            i = queue.pop(0)
            if next_step[i] > len(txs[i]):
                continue
            if i in pending:
                queue.append(i)  # still blocked: its next step waits its turn
                if all(j in pending for j in queue):
                    # Everyone left is blocked: someone's commit or the deadlock
                    # detector must move first.
                    await wait_for(
                        lambda: any(t.done() for t in pending.values()),
                        what="a blocked transaction to move",
                    )
                continue
            step = next_step[i]
            next_step[i] += 1
            if step < len(txs[i]):
                table, user = txs[i][step]
                pending[i] = asyncio.ensure_future(conns[i].execute(WRITES[table], user))
            else:
                pending[i] = asyncio.ensure_future(conns[i].execute("COMMIT"))
            await settle(i)
        await wait_for(lambda: all(t.done() for t in pending.values()), what="the last steps")
        reap()
    finally:
        for conn in conns:
            conn.terminate()
        await observer.close()
    return outcome


async def check(dsn: str, txs: list[list[tuple[str, str]]], order: list[int]) -> None:
    n = next(examples)
    bare = await set_capture(dsn, on=False)
    try:
        without = await run(dsn, txs, order, f"bare{n}")
    finally:
        await set_capture(dsn, on=True, conn=bare)
    with_capture = await run(dsn, txs, order, f"e{n}")
    assert not with_capture.deadlocked or without.deadlocked, (
        f"capture added a deadlock: {with_capture} against {without}"
    )
    conn = await asyncpg.connect(dsn)
    try:
        for user in USERS:
            rows = await conn.fetch(
                "SELECT source FROM statebus.history WHERE user_id = $1"
                " AND source LIKE $2 ORDER BY version",
                user,
                f"app:e{n}\\_%",
            )
            expected = [
                f"app:e{n}_{i}" for i in with_capture.committed if any(u == user for _, u in txs[i])
            ]
            # One version per committed transaction that wrote the user, in commit order.
            assert [r["source"] for r in rows] == expected, (user, txs, order, with_capture)
    finally:
        await conn.close()


async def set_capture(
    dsn: str, *, on: bool, conn: asyncpg.Connection | None = None
) -> asyncpg.Connection:
    conn = conn or await asyncpg.connect(dsn)
    for table in CAPTURED:
        await conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER USER")
    if on:
        await conn.close()
    return conn


async def test_capture_adds_no_deadlock_and_versions_follow_commit_order(
    seeded: asyncpg.Connection, dsn: str
) -> None:
    await seeded.execute("CREATE TABLE public.notes (owner text PRIMARY KEY, body text NOT NULL)")
    await seeded.execute("SELECT statebus.track('public.notes', 'owner', 'notes')")
    for user in USERS:
        await add_user(seeded, user)
        await seeded.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts', 0)", user
        )
        await seeded.execute("INSERT INTO user_system_data (user_id) VALUES ($1)", user)
        await seeded.execute("INSERT INTO public.notes VALUES ($1, '')", user)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(schedules())
    @example(FOUR_STATEMENTS)
    def prop(schedule: tuple[list[list[tuple[str, str]]], list[int]]) -> None:
        txs, order = schedule
        asyncio.run(check(dsn, txs, order))

    await asyncio.to_thread(prop)
