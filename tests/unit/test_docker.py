"""docker/: the compose file and the Dockerfile say what they should.

There is no Docker engine where these tests run, so nothing is built or started:
the compose file is parsed as YAML and its environment is fed to the real settings
loader; the Dockerfile is read instruction by instruction and, where hadolint is
installed (the dev extra ships it), linted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from statebus.config import load

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

# ${NAME}, ${NAME:-default} and ${NAME:?error}: the compose interpolation forms used.
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no {name!r} service"
    found = services[name]
    assert isinstance(found, dict)
    return found


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's substitution: a required variable that is unset fails, as compose would."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise LookupError(rest or name)
        return rest if kind == "-" else ""

    return VARIABLE.sub(one, value)


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        lines.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def one(keyword: str) -> str:
    found = [args for kw, args in final_stage() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    """JSON (exec) form only: shell form would make /bin/sh PID 1 and swallow SIGTERM."""
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(item, str) for item in parsed)
    return parsed


# compose.yaml


def test_postgres_is_17_and_reports_health() -> None:
    postgres = service("postgres")
    assert postgres["image"].split(":")[0] == "postgres"
    assert postgres["image"].split(":")[1].split("-")[0] == "17"
    check = postgres["healthcheck"]
    assert check["test"][0] == "CMD-SHELL" and "pg_isready" in check["test"][1]
    assert check["retries"] >= 1
    # Its data outlives the container.
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_statebus_is_built_from_the_dockerfile_and_waits_for_healthy_postgres() -> None:
    statebus = service("statebus")
    build = statebus["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert statebus["image"].startswith("statebus")
    assert statebus["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_statebus_gets_time_to_shut_down_gracefully() -> None:
    grace = str(service("statebus")["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) >= 20


def test_statebus_publishes_the_port_it_serves_on() -> None:
    ports = service("statebus")["ports"]
    assert len(ports) == 1
    _host, container = str(ports[0]).rsplit(":", 1)
    command = exec_form(one("CMD"))
    assert command[command.index("--port") + 1] == container
    assert one("EXPOSE") == container


def test_statebus_environment_reaches_postgres_in_production() -> None:
    environment = service("statebus")["environment"]
    postgres = service("postgres")["environment"]
    host_env = {"STATEBUS_JWT_SECRET": "s" * 64}
    resolved = {name: interpolate(str(value), host_env) for name, value in environment.items()}
    url = urlsplit(resolved["STATEBUS_DATABASE_URL"])
    assert url.scheme in ("postgres", "postgresql")
    assert url.hostname == "postgres"  # the service name, on compose's network
    assert url.port == 5432
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == interpolate(postgres["POSTGRES_PASSWORD"], host_env)
    assert url.path == "/" + postgres["POSTGRES_DB"]

    settings = load(resolved)  # the real loader: every value is one it accepts
    assert settings.production
    assert settings.database_url == resolved["STATEBUS_DATABASE_URL"]
    assert settings.jwt_secret == "s" * 64


def test_the_jwt_secret_comes_from_the_host_and_is_required() -> None:
    secret = str(service("statebus")["environment"]["STATEBUS_JWT_SECRET"])
    assert VARIABLE.fullmatch(secret), "the secret must not be written into compose.yaml"
    with pytest.raises(LookupError):
        interpolate(secret, {})


def test_compose_sets_only_variables_statebus_reads() -> None:
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return super().get(key, default)

    load(Recording({"STATEBUS_JWT_SECRET": "s" * 64}))
    assert set(service("statebus")["environment"]) <= read


# Dockerfile


def test_the_image_is_slim_python() -> None:
    image = one("FROM").split()[0]
    assert image.startswith("python:") and "slim" in image


def test_the_server_runs_as_a_non_root_user() -> None:
    steps = final_stage()
    user = one("USER")
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0")
    keywords = [keyword for keyword, _ in steps]
    assert keywords.index("USER") < keywords.index("CMD")


def test_the_healthcheck_asks_readyz_without_curl() -> None:
    check = one("HEALTHCHECK")
    options, _, command = check.partition("CMD")
    assert "--interval" in options and "--timeout" in options
    argv = exec_form(command.strip())
    assert argv[0] == "python" and "urllib.request" in argv[2]
    assert "http://127.0.0.1:8000/readyz" in argv[2]


def test_the_command_is_statebus_serve_on_all_interfaces() -> None:
    command = exec_form(one("CMD"))
    assert command[:2] == ["statebus", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "--demo" not in command


def test_what_the_image_copies_exists_and_is_in_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].strip("/") for line in ignored if line.startswith("!")}
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source.strip("./") in allowed, f"{source} is excluded by .dockerignore"


def hadolint() -> str | None:
    # The venv's bin/ is not always on PATH (pytest run by its full path).
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (dev extra)")
def test_hadolint_finds_nothing() -> None:
    binary = hadolint()
    assert binary is not None
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
