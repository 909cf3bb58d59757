"""The NOTIFY payload's format: what this release reads, and what it says of the rest."""

from __future__ import annotations

import pytest

from statebus.core_messages import (
    NOTIFICATION_FORMAT,
    NotificationFormatError,
    decode_notification,
)


def test_format_1_is_the_bare_array_every_release_wrote() -> None:
    assert NOTIFICATION_FORMAT == 1
    assert decode_notification('[["alice", 3], ["bob", 7]]') == [("alice", 3), ("bob", 7)]
    assert decode_notification(b"[]") == []


def test_a_newer_format_says_which_and_what_this_release_reads() -> None:
    with pytest.raises(NotificationFormatError) as raised:
        decode_notification('{"format": 2, "pairs": [["alice", 3]]}')
    assert str(raised.value) == ("notification format 2 is newer than this release understands (1)")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ("a format of a newer release", "not JSON"),
        ('{"v": 2}', "not a statebus notification"),
        ('[["alice", "three"]]', "not a statebus notification"),
        ('{"format": 0}', "notification format 0 is not known"),
    ],
)
def test_anything_else_is_refused_with_a_reason(payload: str, why: str) -> None:
    with pytest.raises(NotificationFormatError, match=why):
        decode_notification(payload)
