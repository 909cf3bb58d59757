"""What the relay tier puts on NATS, and how statebus connects to it (docs/protocol.md).

One subject, `statebus.v1.versions`, carries `Batch` messages: the (user_id, version)
pairs of one notification, stamped with the leading relay's fencing token and a
sequence number that counts from 1 under each leader. User ids travel in the payload
only, never in a subject, so no id (`.`, `*`, `>`, spaces, any Unicode) can collide
with another or with the subject syntax. No document ever travels on NATS: an edge
reads envelopes from Postgres, as a single process does after a NOTIFY.

The JetStream stream `STATEBUS` stores the subject for a short while (on file, so it
outlives a restart of every node) so that a relay's publish is acknowledged only once
a quorum of nodes holds it; edges receive the same messages as plain subscribers and
detect any they missed by the sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from statebus.config import Settings

log = logging.getLogger("statebus.nats")

SUBJECT = "statebus.v1.versions"
STREAM = "STATEBUS"
# Long enough for a retried publish to be deduplicated (Nats-Msg-Id) and for people to
# look at recent traffic (`nats stream view STATEBUS`); edges never read it back.
STREAM_MAX_AGE = 60.0
STREAM_MAX_BYTES = 256 * 1024 * 1024
REPLICAS = 3
# A leading relay sends at least one message a second, an empty one when nothing was
# committed (relay.KEEP_ALIVE). An edge that hears nothing for this long says it is not
# ready: no relay leads, or none reaches NATS, and no commit would reach its sockets.
# Longer than a change of leader (under 2 s) plus a loaded machine's delays.
RELAY_SILENCE = 5.0


class Batch(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One message: `[leader, seq, [[user_id, version], ...]]`."""

    leader: int  # the relay's fencing token (statebus.relay_lease.token)
    seq: int  # 1, 2, 3... per leader: a jump means a message was missed
    pairs: list[tuple[str, int]]


batch_encoder = msgspec.json.Encoder()
batch_decoder = msgspec.json.Decoder(Batch)

ErrorCallback = Callable[[Exception], Awaitable[None]]
EventCallback = Callable[[], Awaitable[None]]


async def connect(
    settings: Settings,
    *,
    name: str,
    disconnected: EventCallback | None = None,
    reconnected: EventCallback | None = None,
    error: ErrorCallback | None = None,
) -> Client:
    """A NATS connection that reconnects forever (to any node of the cluster)."""
    assert settings.nats_url is not None
    options: dict[str, Any] = {
        "servers": settings.nats_url.split(","),
        "name": name,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.2,
        "max_reconnect_attempts": -1,
        "ping_interval": 5,
        "max_outstanding_pings": 2,
        "allow_reconnect": True,
    }
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if disconnected is not None:
        options["disconnected_cb"] = disconnected
    if reconnected is not None:
        options["reconnected_cb"] = reconnected
    options["error_cb"] = error if error is not None else _log_error
    return await nats.connect(**options)


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s: %s", type(exc).__name__, exc)


async def ensure_stream(js: JetStreamContext) -> None:
    """Creates (or updates) the stream; with fewer than three nodes, one replica."""
    config = StreamConfig(
        name=STREAM,
        subjects=[SUBJECT],
        storage=StorageType.FILE,  # survives a restart of the whole cluster
        max_age=STREAM_MAX_AGE,
        max_bytes=STREAM_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=STREAM_MAX_AGE,
        num_replicas=REPLICAS,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.APIError as exc:
        if "insufficient resources" in str(exc).lower() or "replicas" in str(exc).lower():
            log.warning("NATS has fewer than %d JetStream nodes: one replica", REPLICAS)
            config.num_replicas = 1
            await js.add_stream(config)
        elif exc.err_code == 10058:  # the stream exists with another configuration
            await js.update_stream(config)
        else:
            raise
