"""Settings from the environment: defaults, clear errors, secrets kept out of sight."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from statebus.config import ConfigError, load


def test_dev_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    first = load({"STATEBUS_HOME": str(tmp_path)})
    second = load({"STATEBUS_HOME": str(tmp_path)})
    assert first.jwt_secret and first.jwt_secret == second.jwt_secret
    assert len(first.jwt_secret) >= 32
    mode = stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode)
    assert mode == 0o600


def test_production_needs_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STATEBUS_JWT_SECRET"):
        load({"STATEBUS_HOME": str(tmp_path), "STATEBUS_ENV": "production"})
    assert not (tmp_path / "jwt_secret").exists()


def test_lists_and_bad_values(tmp_path: Path) -> None:
    settings = load(
        {
            "STATEBUS_HOME": str(tmp_path),
            "STATEBUS_ALLOWED_ORIGINS": "https://a.example, https://b.example,",
            "STRIPE_WEBHOOK_SECRET": "whsec_new,whsec_old",
        }
    )
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.stripe_webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.proration_behavior == "always_invoice"
    with pytest.raises(ConfigError, match="STATEBUS_PRORATION_BEHAVIOR"):
        load({"STATEBUS_HOME": str(tmp_path), "STATEBUS_PRORATION_BEHAVIOR": "sometimes"})
    with pytest.raises(ConfigError, match="STATEBUS_MAX_SOCKETS_PER_USER"):
        load({"STATEBUS_HOME": str(tmp_path), "STATEBUS_MAX_SOCKETS_PER_USER": "many"})
    with pytest.raises(ConfigError, match="STATEBUS_MAX_SOCKETS must be at least 1"):
        load({"STATEBUS_HOME": str(tmp_path), "STATEBUS_MAX_SOCKETS": "0"})


def test_repr_hides_secrets(tmp_path: Path) -> None:
    settings = load(
        {
            "STATEBUS_HOME": str(tmp_path),
            "STATEBUS_JWT_SECRET": "s" * 40,
            "STRIPE_API_KEY": "sk_test_secret",
            "STATEBUS_DATABASE_URL": "postgresql://u:pw@h/db",
        }
    )
    text = repr(settings) + str(settings)
    assert "sk_test_secret" not in text and "s" * 40 not in text and "pw@" not in text
