"""A restored database is detected, not trusted to a manual step.

After a restore (a dump into another cluster or database, a point-in-time recovery, a
promoted standby) each user's version is the backup's, lower than what clients hold:
new commits would reuse numbers clients have seen with other content, and a client
resuming with such a number would be told `current`. statebus.check_incarnation()
notices (sql/triggers/70_incarnation.sql) and moves every version past them. Every
server calls it before it serves and after each LISTEN reconnect (a recovery restarts
PostgreSQL under running servers), before re-reading its watched users.
"""

from __future__ import annotations

import logging

from statebus import sqlfiles
from statebus.states import Database

log = logging.getLogger("statebus.restore")


async def check(db: Database) -> bool:
    """True when this call found a restore and moved the versions."""
    row = await db.fetchrow(sqlfiles.queries()["check_incarnation"], timeout=60)
    if row is None or not row["restored"]:
        return False
    log.warning(
        "restore detected: %s; moved the versions of %d users past anything served before. "
        "Bring Stripe's side up to date with `statebus reconcile` (docs/operations.md, "
        "Backups and restore)",
        row["reason"],
        row["users"],
    )
    return True
