"""docker/compose.yaml's `tier` profile: 3 NATS nodes, 2 relays, 2 edges, each statebus
service configured as the real settings loader accepts it in production."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from statebus.config import load
from tests.unit.test_docker import compose, exec_form, interpolate, one, service

HOST_ENV = {"STATEBUS_JWT_SECRET": "s" * 64}


def tier_services() -> dict[str, dict[str, object]]:
    return {
        name: found
        for name, found in compose()["services"].items()
        if "tier" in found.get("profiles", [])
    }


def test_the_profile_holds_three_nats_nodes_two_relays_two_edges() -> None:
    names = sorted(tier_services())
    assert names == ["edge1", "edge2", "nats1", "nats2", "nats3", "relay1", "relay2"]
    # The single server and Postgres stay outside any profile: `up` alone is unchanged.
    assert "profiles" not in service("statebus") and "profiles" not in service("postgres")


@pytest.mark.parametrize("name", ["nats1", "nats2", "nats3"])
def test_nats_nodes_form_one_jetstream_cluster_with_a_password(name: str) -> None:
    node = service(name)
    command = node["command"]
    assert "--jetstream" in command and command[command.index("--name") + 1] == name
    routes = command[command.index("--routes") + 1].split(",")
    others = {f"nats://{other}:6222" for other in ("nats1", "nats2", "nats3") if other != name}
    assert set(routes) == others
    assert command[command.index("--user") + 1] == "statebus"
    assert any(str(v).endswith(":/data") for v in node["volumes"])


@pytest.mark.parametrize("name", ["relay1", "relay2", "edge1", "edge2"])
def test_statebus_services_load_in_production_with_nats_credentials(name: str) -> None:
    environment = service(name)["environment"]
    resolved = {key: interpolate(str(value), HOST_ENV) for key, value in environment.items()}
    settings = load(resolved)
    assert settings.production and settings.nats_url is not None
    for address in settings.nats_url.split(","):
        url = urlsplit(address)
        assert url.username == "statebus" and url.password and url.port == 4222
        assert url.hostname in ("nats1", "nats2", "nats3")
    depends = service(name)["depends_on"]
    assert all(
        depends[node]["condition"] == "service_healthy" for node in ("nats1", "nats2", "nats3")
    )


def test_relays_run_statebus_relay_and_are_checked_on_their_metrics() -> None:
    for name in ("relay1", "relay2"):
        relay = service(name)
        command = relay["command"]
        assert command[:2] == ["statebus", "relay"] and command[command.index("--name") + 1] == name
        port = command[command.index("--metrics-port") + 1]
        assert f"127.0.0.1:{port}/metrics" in relay["healthcheck"]["test"][-1]
        assert "ports" not in relay


def test_edges_are_the_image_serve_on_their_own_ports() -> None:
    command = exec_form(one("CMD"))
    assert command[:2] == ["statebus", "serve"]
    published = [str(service(name)["ports"][0]) for name in ("edge1", "edge2")]
    assert published == ["8001:8000", "8002:8000"]
    assert all("command" not in service(name) for name in ("edge1", "edge2"))
