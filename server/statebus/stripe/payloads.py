"""Stored Stripe events decoded for the inbox worker without building what it never reads.

An event's `data.object` can be most of its 1 MiB (an invoice's lines, a session's line
items), and as Python objects that is 10-30 times its size. Here each of its values
stays raw JSON text (a view of the payload, no copy) until something reads that key, and
an object read is decoded the same way, one level at a time. events.py reads events
only through `.get()` and `[]`, which behave as on a plain dict.
"""

from __future__ import annotations

from typing import Any

import msgspec

from statebus.stripe.events import StoredEvent

__all__ = ["LazyObject", "LeanStoredEvent", "lean_decoder"]

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _value(raw: msgspec.Raw) -> Any:
    if bytes(memoryview(raw)[:1]) == b"{":
        return LazyObject(_fields.decode(raw))
    return msgspec.json.decode(raw)


class LazyObject(dict[str, Any]):
    """A JSON object whose values are decoded when first read."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, msgspec.Raw):
            value = _value(value)
            super().__setitem__(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class LeanStoredEvent(StoredEvent):
    """`StoredEvent`, its `data` kept as raw JSON until read."""

    data: dict[str, msgspec.Raw] = {}

    @property
    def obj(self) -> dict[str, Any]:
        raw = self.data.get("object")
        if raw is None or bytes(memoryview(raw)[:1]) != b"{":
            return {}
        return LazyObject(_fields.decode(raw))


lean_decoder = msgspec.json.Decoder(LeanStoredEvent)
