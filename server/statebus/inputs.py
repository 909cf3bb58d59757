"""Checks on client-controlled text and JSON, made at the edge before anything reaches SQL.

PostgreSQL's `text` and `jsonb` cannot hold NUL, and UTF-8 cannot encode a lone surrogate
(which JSON's `\\ud800` escape produces): either one in a query parameter is an unhandled
database or driver error deep inside a request. Every route and the socket check what
they pass on with these helpers, so bad input gets a 400 / 4400 / 401, never a 5xx.

Must never: echo the offending value back in an error message.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

MAX_USER_ID_CHARS = 255  # public.users.id's own CHECK
MAX_JSON_DEPTH = 64  # Stripe's events nest a handful of levels; 64 is far beyond any
# jsonb keeps a number's own digits as `numeric`, which refuses more than 16,383 digits
# after the point (0.1111..., 1e-20000); real payloads carry nothing like 1,000.
MAX_NUMBER_DIGITS = 1000

# Floats as Decimal: their digits as written, which is what jsonb will have to store.
_exact = msgspec.json.Decoder(float_hook=Decimal)


class InvalidInput(ValueError):
    """Input statebus refuses; the message names what is wrong, never the value itself."""


def is_clean_text(value: str) -> bool:
    """No NUL and no lone surrogate: text PostgreSQL and UTF-8 can both carry."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def user_id(value: str) -> str:
    """A user id from a client (`?user_id=`, the socket's `user_id`)."""
    if not value or len(value) > MAX_USER_ID_CHARS or not is_clean_text(value):
        raise InvalidInput(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters of text")
    return value


def decode_json(body: bytes) -> Any:
    """A JSON document that PostgreSQL's jsonb can store as written, or InvalidInput."""
    try:
        document = _exact.decode(body)
    except RecursionError:  # msgspec's own guard, far deeper than MAX_JSON_DEPTH
        raise InvalidInput(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"not JSON: {exc}") from None
    except ArithmeticError:  # Decimal refuses the number (an exponent of 5,000 digits)
        raise InvalidInput(f"JSON holds a number of over {MAX_NUMBER_DIGITS} digits") from None
    check_json(document)
    return document


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuses a decoded JSON document nested deeper than `max_depth`, or holding a key,
    string or number that PostgreSQL's jsonb cannot store. Iterative: depth cannot exhaust
    the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise InvalidInput(f"JSON is nested deeper than {max_depth} levels")
            for key, item in node.items():
                if not is_clean_text(key):
                    raise InvalidInput("JSON holds a NUL or an unpaired surrogate")
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise InvalidInput(f"JSON is nested deeper than {max_depth} levels")
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str) and not is_clean_text(node):
            raise InvalidInput("JSON holds a NUL or an unpaired surrogate")
        elif isinstance(node, Decimal):
            exponent = node.as_tuple().exponent
            digits = len(node.as_tuple().digits)
            if not isinstance(exponent, int) or abs(exponent) + digits > MAX_NUMBER_DIGITS:
                raise InvalidInput(f"JSON holds a number of over {MAX_NUMBER_DIGITS} digits")


# For checking a JSON document's shape on its bytes, without decoding it into objects
# (a 1 MiB document can take 20-30 times its size as Python objects).
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_LONG_NUMBER = re.compile(rb"[-+.0-9eE]{%d,}" % (MAX_NUMBER_DIGITS + 1))


def check_json_bytes(body: bytes | bytearray, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """`check_json`'s depth and number limits, on well-formed JSON text (a decoder has
    accepted it). NUL and unpaired surrogates are left to the reader of the text
    (PostgreSQL's jsonb refuses both). Costs a copy or two of the text, not a tree."""
    bare = _STRINGS.sub(b'""', body)  # brackets and digits inside strings do not count
    if _LONG_NUMBER.search(bare) is not None:
        raise InvalidInput(f"JSON holds a number of over {MAX_NUMBER_DIGITS} digits")
    brackets = bare.translate(None, _NOT_BRACKETS)
    del bare
    for _ in range(max_depth):  # each round removes the innermost level
        if not brackets:
            return
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    if brackets:
        raise InvalidInput(f"JSON is nested deeper than {max_depth} levels")
