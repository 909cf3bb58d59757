"""Loading the Stripe object fixtures of tests/fixtures/stripe (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


def fixture(name: str, *, customer: str = "", sub: str = "", user: str = "") -> dict[str, Any]:
    """The fixture `name` (without .json), placeholders replaced by the given ids."""
    text = (FIXTURES / f"{name}.json").read_text()
    for placeholder, value in (
        ("cus_PLACEHOLDER", customer),
        ("sub_PLACEHOLDER", sub),
        ("USER_PLACEHOLDER", user),
    ):
        if value:
            text = text.replace(placeholder, value)
    loaded: dict[str, Any] = json.loads(text)
    return loaded
