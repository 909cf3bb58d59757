"""The pieces of issue 17's limits that need no server: the connection count, the file
limit check, JSON shape checks on bytes, and lazily decoded stored events."""

from __future__ import annotations

import asyncio
import resource

import msgspec
import pytest

from statebus.config import ConfigError
from statebus.connections import OVERFLOW, RESERVED_FILES, Connections, fit_file_limit
from statebus.inputs import MAX_JSON_DEPTH, InvalidInput, check_json_bytes
from statebus.stripe.events import customer_of, subscription_of
from statebus.stripe.payloads import LazyObject, lean_decoder


class Transport(asyncio.BaseTransport):
    pass


def test_connections_past_the_cap_are_answered_then_dropped() -> None:
    connections = Connections(2, overflow=1)
    a, b, c, d = (Transport() for _ in range(4))
    assert [connections.admit(t) for t in (a, b, c, d)] == [
        "admitted",
        "admitted",
        "over",
        "dropped",
    ]
    assert len(connections) == 2 and connections.admitted(a) and not connections.admitted(c)
    connections.release(a)
    connections.release(a)  # both protocols of an upgraded connection may release it
    connections.release(c)
    assert len(connections) == 1
    assert connections.admit(Transport()) == "admitted"


def test_a_cap_that_cannot_fit_the_file_limit_is_refused_naming_both() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fits = hard - RESERVED_FILES - OVERFLOW
    assert fit_file_limit(fits, explicit=True) == fits
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard  # raised to the hard one
    with pytest.raises(ConfigError) as refused:
        fit_file_limit(fits + 1, explicit=True)
    assert f"STATEBUS_MAX_SOCKETS={fits + 1}" in str(refused.value)
    assert f"open-file limit of {hard}" in str(refused.value)
    # The default (not set by the operator) is lowered to what fits instead.
    assert fit_file_limit(fits + 1, explicit=False) == fits


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (b"[1, 2]", None),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
        (b'{"a": "' + b"[" * 100 + b'"}', None),  # brackets in a string do not nest
        (b'{"a": "\\"[[[[", "b": 1}', None),  # nor after an escaped quote
        (b"[" + b"1" * 1001 + b"]", "over 1000 digits"),
        (b"[1e-" + b"0" * 1000 + b"1]", "over 1000 digits"),
        (b'["' + b"1" * 5000 + b'"]', None),  # digits in a string are text
    ],
)
def test_json_shape_is_checked_on_the_text(body: bytes, refused: str | None) -> None:
    if refused is None:
        check_json_bytes(body)
    else:
        with pytest.raises(InvalidInput, match=refused):
            check_json_bytes(body)


def test_a_stored_event_decodes_only_what_is_read() -> None:
    event = lean_decoder.decode(
        b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {'
        b'"customer": {"id": "cus_1"}, "lines": [1, 2, 3],'
        b' "parent": {"subscription_details": {"subscription": "sub_9"}}}}}'
    )
    obj = event.obj
    assert isinstance(obj, LazyObject)
    assert isinstance(dict.__getitem__(obj, "lines"), msgspec.Raw)  # never built
    assert customer_of(event) == "cus_1" and subscription_of(event) == "sub_9"
    assert obj.get("missing") is None and obj["lines"] == [1, 2, 3]
    assert lean_decoder.decode(b'{"id": "e", "type": "t", "data": {"object": []}}').obj == {}
