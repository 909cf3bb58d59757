"""Settings from the environment (docs/configuration.md), read once at start-up."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# The Stripe API version statebus sends and is tested against (with stripe-python 16.x),
# so a newer `stripe` package never changes the shapes statebus reads. STRIPE_API_VERSION
# overrides it; the one place it is pinned.
STRIPE_API_VERSION = "2026-10-28.endive"

# Stripe's proration_behavior for upgrades; always_invoice charges the difference now.
PRORATIONS = ("always_invoice", "create_prorations", "none")
# A typo such as "prod" must not quietly run with development defaults (a generated secret).
ENVIRONMENTS = ("development", "production")
DEFAULT_ADMIN_CLAIM = ("role", "admin")
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    production: bool
    jwt_secret: str | None
    jwks_url: str | None
    jwt_audience: str | None
    jwt_issuer: str | None
    allowed_origins: tuple[str, ...]
    stripe_api_key: str | None
    stripe_webhook_secrets: tuple[str, ...]
    stripe_api_base: str | None
    max_sockets_per_user: int = 32
    # A process holds at most ~19,900 sockets here (20,000 open files); past this cap
    # new sockets get 1013 and a client backs off instead of failing at accept().
    max_sockets: int = 18_000
    proration_behavior: str = "always_invoice"
    stripe_api_version: str = STRIPE_API_VERSION
    # Events of connected accounts (Connect) are applied only when this is set.
    stripe_connect: bool = False
    # (claim, value): a token whose `claim` is `value` (or a list holding it) is an admin.
    admin_claim: tuple[str, str] = DEFAULT_ADMIN_CLAIM
    # Seconds a client has to send a request's headers (connections.py), and that a
    # kept-alive connection may stay idle between requests (uvicorn's timeout_keep_alive).
    header_timeout: float = 10.0
    idle_timeout: int = 5
    # Stripe webhook deliveries processed at once; past it, 503 with Retry-After.
    webhook_concurrency: int = 8
    # True when jwt_secret was generated into $STATEBUS_HOME: fine on a laptop, and the
    # server says so at start, since anyone who can read that file can mint tokens.
    generated_secret: bool = False
    # Seconds any statebus session waits for a database lock (lock_timeout), and a billing
    # change for the same user's change in progress in this process, before giving up (409).
    lock_timeout: float = 5.0
    billing_wait: float = 5.0
    # Seconds a notification may wait to become frames (or the event loop may stall)
    # before the process reports not ready (delivery.py).
    ready_threshold: float = 5.0
    # Seconds between SIGTERM and closing the port, answering /readyz 503 (draining.py).
    drain_seconds: float = 2.0
    # Fraction of the NOTIFY queue past which the process warns and is not ready.
    notify_queue_alert: float = 0.5
    # Log lines as plain text or one JSON object each (logformat.py).
    log_format: str = "text"
    # The relay tier (docs/scaling.md): NATS servers, comma separated; None = single process.
    nats_url: str | None = None
    nats_creds: Path | None = None  # a NATS .creds file (or user:password in the URL)
    # A streaming replica for the envelope reads that notifications cause (replicas.py).
    read_database_url: str | None = None

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return (
            f"Settings(home={self.home!s}, database={'url' if self.database_url else 'embedded'})"
        )


def load(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    home = Path(env.get("STATEBUS_HOME") or "./.statebus").expanduser()
    production = _environment(env) == "production"
    jwks_url = env.get("STATEBUS_JWKS_URL") or None
    audience = env.get("STATEBUS_JWT_AUDIENCE") or None
    if jwks_url is not None and audience is None:
        # An identity provider is often shared by several apps: without an audience check,
        # a token minted for any of them would be accepted here.
        raise ConfigError(
            "STATEBUS_JWT_AUDIENCE is required with STATEBUS_JWKS_URL "
            "(the audience your identity provider puts in tokens meant for this app)"
        )
    secret = env.get("STATEBUS_JWT_SECRET") or None
    generated = False
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"STATEBUS_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    if secret is None and jwks_url is None:
        if production:
            raise ConfigError(
                "STATEBUS_JWT_SECRET (or STATEBUS_JWKS_URL) is required in production"
            )
        secret, generated = dev_secret(home), True
    max_per_user = _count(env, "STATEBUS_MAX_SOCKETS_PER_USER", 32)
    max_sockets = _count(env, "STATEBUS_MAX_SOCKETS", 18_000)
    proration = env.get("STATEBUS_PRORATION_BEHAVIOR") or "always_invoice"
    if proration not in PRORATIONS:
        raise ConfigError(f"STATEBUS_PRORATION_BEHAVIOR must be one of {', '.join(PRORATIONS)}")
    nats_url, nats_creds = _nats(env, production)
    return Settings(
        database_url=env.get("STATEBUS_DATABASE_URL") or None,
        home=home,
        production=production,
        jwt_secret=secret,
        jwks_url=jwks_url,
        jwt_audience=audience,
        jwt_issuer=env.get("STATEBUS_JWT_ISSUER") or None,
        allowed_origins=_list(env.get("STATEBUS_ALLOWED_ORIGINS")),
        stripe_api_key=env.get("STRIPE_API_KEY") or None,
        stripe_webhook_secrets=_list(env.get("STRIPE_WEBHOOK_SECRET")),
        stripe_api_base=env.get("STRIPE_API_BASE") or None,
        max_sockets_per_user=max_per_user,
        max_sockets=max_sockets,
        proration_behavior=proration,
        stripe_api_version=env.get("STRIPE_API_VERSION") or STRIPE_API_VERSION,
        stripe_connect=env.get("STATEBUS_STRIPE_CONNECT", "") in ("1", "true", "yes"),
        admin_claim=_admin_claim(env.get("STATEBUS_ADMIN_CLAIM")),
        generated_secret=generated,
        lock_timeout=_seconds(env, "STATEBUS_LOCK_TIMEOUT", 5.0),
        billing_wait=_seconds(env, "STATEBUS_BILLING_WAIT", 5.0),
        ready_threshold=_seconds(env, "STATEBUS_READY_THRESHOLD", 5.0),
        drain_seconds=_seconds(env, "STATEBUS_DRAIN_SECONDS", 2.0, zero=True),
        notify_queue_alert=_fraction(env, "STATEBUS_NOTIFY_QUEUE_ALERT", 0.5),
        log_format=_log_format(env.get("STATEBUS_LOG_FORMAT")),
        header_timeout=_count(env, "STATEBUS_HEADER_TIMEOUT", 10),
        idle_timeout=_count(env, "STATEBUS_IDLE_TIMEOUT", 5),
        webhook_concurrency=_count(env, "STATEBUS_WEBHOOK_CONCURRENCY", 8),
        nats_url=nats_url,
        nats_creds=nats_creds,
        read_database_url=env.get("STATEBUS_READ_DATABASE_URL") or None,
    )


def _nats(env: dict[str, str], production: bool) -> tuple[str | None, Path | None]:
    """STATEBUS_NATS_URL and STATEBUS_NATS_CREDS; in production NATS must authenticate."""
    url = env.get("STATEBUS_NATS_URL") or None
    creds_value = env.get("STATEBUS_NATS_CREDS") or None
    creds = None if creds_value is None else Path(creds_value).expanduser()
    if url is None:
        return None, None
    servers = _list(url)
    for server in servers:
        scheme = server.split("://", 1)[0] if "://" in server else ""
        if scheme not in ("nats", "tls"):
            raise ConfigError(
                f"STATEBUS_NATS_URL must list nats://host:port (or tls://) addresses, not {server!r}"
            )
    if creds is not None and not creds.is_file():
        raise ConfigError(f"STATEBUS_NATS_CREDS names no readable file: {creds}")
    if production and creds is None and not all("@" in server for server in servers):
        raise ConfigError(
            "STATEBUS_NATS_CREDS (or user:password@ in every STATEBUS_NATS_URL address) is"
            " required in production: an unauthenticated NATS lets anyone publish versions"
        )
    return ",".join(servers), creds


def _environment(env: dict[str, str]) -> str:
    value = env.get("STATEBUS_ENV") or "development"
    if value not in ENVIRONMENTS:
        raise ConfigError(f"STATEBUS_ENV must be 'development' or 'production', not {value!r}")
    return value


def _admin_claim(value: str | None) -> tuple[str, str]:
    """`claim=value`, e.g. `role=admin` or `org_role=org:admin` (split at the first `=`)."""
    if value is None or value == "":
        return DEFAULT_ADMIN_CLAIM
    name, sep, wanted = value.partition("=")
    name, wanted = name.strip(), wanted.strip()
    if not sep or not name or not wanted:
        raise ConfigError(
            f"STATEBUS_ADMIN_CLAIM must look like claim=value (e.g. role=admin), not {value!r}"
        )
    return name, wanted


def _count(env: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1")
    return value


def _seconds(env: dict[str, str], name: str, default: float, *, zero: bool = False) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, e.g. 5 or 0.5") from None
    if not (0 <= value if zero else 0 < value) or not value < 3600:
        least = "at least 0" if zero else "more than 0"
        raise ConfigError(f"{name} must be {least} and less than 3600 seconds")
    return value


def _fraction(env: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{name} must be a fraction, e.g. 0.5 for half") from None
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be more than 0 and at most 1 (0.5 is half)")
    return value


def _log_format(value: str | None) -> str:
    if not value:
        return "text"
    if value not in ("text", "json"):
        raise ConfigError(f"STATEBUS_LOG_FORMAT must be 'text' or 'json', not {value!r}")
    return value


def lock_timeout_ms(settings: Settings) -> int:
    """The lock_timeout of every statebus connection, in milliseconds."""
    return max(1, round(settings.lock_timeout * 1000))


def dev_secret(home: Path) -> str:
    """A development HS256 secret, generated once and kept in $STATEBUS_HOME (mode 0600)."""
    path = home / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = home / f".jwt_secret.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    try:
        os.link(tmp, path)  # atomic, and fails if another process won the race
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
