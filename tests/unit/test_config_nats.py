"""STATEBUS_NATS_URL and STATEBUS_NATS_CREDS: parsed, checked, required to authenticate
in production, and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from statebus.config import ConfigError, load


def base(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"STATEBUS_HOME": str(tmp_path), "STATEBUS_JWT_SECRET": "s" * 40, **env}


def test_unset_means_one_process(tmp_path: Path) -> None:
    settings = load(base(tmp_path))
    assert settings.nats_url is None and settings.nats_creds is None


def test_a_list_of_servers(tmp_path: Path) -> None:
    settings = load(base(tmp_path, STATEBUS_NATS_URL="nats://a:4222, nats://b:4222,"))
    assert settings.nats_url == "nats://a:4222,nats://b:4222"
    with pytest.raises(ConfigError, match="nats://host:port"):
        load(base(tmp_path, STATEBUS_NATS_URL="http://a:4222"))
    with pytest.raises(ConfigError, match="STATEBUS_NATS_CREDS names no readable file"):
        load(base(tmp_path, STATEBUS_NATS_URL="nats://a:4222", STATEBUS_NATS_CREDS="/nope"))


def test_production_requires_credentials(tmp_path: Path) -> None:
    prod = {"STATEBUS_ENV": "production", "STATEBUS_NATS_URL": "nats://a:4222"}
    with pytest.raises(ConfigError, match="STATEBUS_NATS_CREDS .* is required in production"):
        load(base(tmp_path, **prod))
    creds = tmp_path / "statebus.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    assert load(base(tmp_path, **prod, STATEBUS_NATS_CREDS=str(creds))).nats_creds == creds
    with_password = load(base(tmp_path, **(prod | {"STATEBUS_NATS_URL": "nats://u:pw@a:4222"})))
    assert with_password.nats_url == "nats://u:pw@a:4222"
    assert "pw" not in repr(with_password)
