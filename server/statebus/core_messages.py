"""Every message that crosses a wire: NOTIFY payloads, socket frames, HTTP bodies.

One Encoder/Decoder per type, made at import and reused. Incoming messages forbid
unknown fields so a typo in a client fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Any

import msgspec

JSON = Any  # a decoded JSON value; the state document is open-ended by design


class Envelope(msgspec.Struct, frozen=True):
    """The state document every read and every push carries (docs/protocol.md).

    `committed_at` (ISO-8601, UTC) and `source` (which writer) are None at version 0.
    Inside the server `state` is a `msgspec.Raw` holding the document as Postgres
    rendered it, so it is never decoded and re-encoded on the way through.
    """

    user_id: str
    version: int
    committed_at: str | None = None
    source: str | None = None
    state: JSON = None


# Payload of one NOTIFY on channel `statebus`: [[user_id, version], ...].
Notification = list[tuple[str, int]]

# The notification format this release writes and reads. Format 1 is the bare JSON array
# above and carries no marker (every release so far wrote it, so the payload's bytes stay
# as they were). A later format is a JSON object that says which it is, {"format": 2,
# ...}: a release that meets a format newer than its own can tell why it cannot read it,
# instead of guessing (docs/upgrading.md).
NOTIFICATION_FORMAT = 1


class _FormatMarker(msgspec.Struct):
    """Only the marker of a later format; the rest of such a payload is not read here."""

    format: int


class NotificationFormatError(ValueError):
    """A payload on channel `statebus` this release cannot read; str() says why."""


_notification_or_marker = msgspec.json.Decoder(Notification | _FormatMarker)


def decode_notification(payload: str | bytes) -> Notification:
    """The (user_id, version) pairs of one notification, or NotificationFormatError."""
    try:
        decoded = _notification_or_marker.decode(payload)
    except msgspec.ValidationError as exc:
        raise NotificationFormatError(f"not a statebus notification: {exc}") from None
    except msgspec.DecodeError:
        raise NotificationFormatError("not a statebus notification: not JSON") from None
    if isinstance(decoded, _FormatMarker):
        if decoded.format > NOTIFICATION_FORMAT:
            raise NotificationFormatError(
                f"notification format {decoded.format} is newer than this release "
                f"understands ({NOTIFICATION_FORMAT})"
            )
        raise NotificationFormatError(f"notification format {decoded.format} is not known")
    return decoded


# --- socket: client to server -------------------------------------------------------


class Auth(msgspec.Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    token: str
    since: int | None = None
    user_id: str | None = None  # admins only: whose state to follow


class Ping(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    """The heartbeat: any time after auth; the server answers `Pong`. The client drives it
    (it knows when it last heard something), so the server keeps no timer per socket."""


ClientMessage = Auth | Ping


# --- socket: server to client -------------------------------------------------------


class Snapshot(msgspec.Struct, tag="snapshot", tag_field="type"):
    user_id: str
    version: int
    committed_at: str | None = None
    source: str | None = None
    state: JSON = None


class Current(msgspec.Struct, tag="current", tag_field="type"):
    version: int


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class Error(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str


ServerMessage = Snapshot | Current | Pong | Error


# --- HTTP (Stripe's bodies live in statebus.stripe.stripe_messages) -------------------------


class ErrorBody(msgspec.Struct):
    """Every HTTP error answer: `{"error": "<code>", "message": "..."}`."""

    error: str
    message: str


encoder = msgspec.json.Encoder()
notification_decoder = msgspec.json.Decoder(Notification)
client_decoder = msgspec.json.Decoder(ClientMessage)
server_decoder = msgspec.json.Decoder(ServerMessage)
