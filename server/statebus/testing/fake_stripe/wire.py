"""Stripe's wire conventions as the fake answers them: errors, ids, form encoding, metadata."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

JSON = dict[str, Any]


class StripeError(Exception):
    """An error answered in Stripe's shape: ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"error": {"type": error_type, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    """Stripe's answer for an unknown id: 404 for the path id, 400 for one in the params."""
    status = 404 if param == "id" else 400
    message = f"No such {kind}: '{object_id}'"
    return StripeError(status, message, code="resource_missing", param=param)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:14]}"


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(text: str) -> JSON:
    """Decode stripe-python's form encoding (``items[0][price]=x``) into nested dicts/lists."""
    root: JSON = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise StripeError(400, f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts):
            part = part or str(len(node))  # "expand[]=x" appends
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise StripeError(400, f"Invalid parameter: {key}", param=key)
                node = child
    return _listify(root)


def _listify(node: JSON) -> JSON:
    for key, value in node.items():
        if isinstance(value, dict):
            value = _listify(value)
            if value and all(k.isdigit() for k in value):
                value = [value[k] for k in sorted(value, key=int)]
            node[key] = value
    return node


def merge_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe semantics: keys merge, an empty value unsets a key, ``metadata=""`` clears all."""
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise StripeError(400, "Invalid metadata: must be a hash", param="metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged
