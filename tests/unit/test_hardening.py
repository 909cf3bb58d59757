"""Settings refused at start, admin tokens, and what statebus says and logs (no database)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import stripe

from statebus import inputs
from statebus.auth import AuthError, AuthSettings, TokenVerifier, issue_token
from statebus.config import ConfigError, load
from statebus.serve import DropQueryStrings, log_config
from statebus.stripe.billing import stripe_failed

SECRET = "unit-secret-" + "y" * 40


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"STATEBUS_HOME": str(tmp_path), **values}


# --- STATEBUS_ENV (finding 7) ---------------------------------------------------------


@pytest.mark.parametrize("value", ["prod", "Production", "staging", "dev", " production"])
def test_an_unknown_environment_is_refused_with_a_clear_message(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="STATEBUS_ENV must be 'development' or 'production'"):
        load(env(tmp_path, STATEBUS_ENV=value, STATEBUS_JWT_SECRET=SECRET))
    assert not (tmp_path / "jwt_secret").exists()  # no secret generated for a typo


def test_development_and_production_are_accepted(tmp_path: Path) -> None:
    assert not load(env(tmp_path, STATEBUS_ENV="development")).production
    assert not load(env(tmp_path)).production
    assert load(env(tmp_path, STATEBUS_ENV="production", STATEBUS_JWT_SECRET=SECRET)).production


def test_a_generated_secret_is_flagged_so_the_server_warns(tmp_path: Path) -> None:
    assert load(env(tmp_path)).generated_secret
    assert not load(env(tmp_path, STATEBUS_JWT_SECRET=SECRET)).generated_secret


def test_a_short_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load(env(tmp_path, STATEBUS_JWT_SECRET="short"))


# --- admin claim and audience (finding 6) ---------------------------------------------


def test_jwks_requires_an_audience(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STATEBUS_JWT_AUDIENCE is required"):
        load(env(tmp_path, STATEBUS_JWKS_URL="https://idp.example/.well-known/jwks.json"))
    settings = load(
        env(
            tmp_path,
            STATEBUS_JWKS_URL="https://idp.example/.well-known/jwks.json",
            STATEBUS_JWT_AUDIENCE="statebus",
        )
    )
    assert settings.jwt_audience == "statebus"


def test_admin_claim_defaults_and_parses(tmp_path: Path) -> None:
    assert load(env(tmp_path)).admin_claim == ("role", "admin")
    claim = load(env(tmp_path, STATEBUS_ADMIN_CLAIM="org_role=org:admin")).admin_claim
    assert claim == ("org_role", "org:admin")


@pytest.mark.parametrize("value", ["admin", "=admin", "role=", "role", " = "])
def test_a_malformed_admin_claim_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="STATEBUS_ADMIN_CLAIM must look like claim=value"):
        load(env(tmp_path, STATEBUS_ADMIN_CLAIM=value))


def verifier(admin_claim: tuple[str, str]) -> TokenVerifier:
    return TokenVerifier(
        AuthSettings(
            secret=SECRET, jwks_url=None, audience=None, issuer=None, admin_claim=admin_claim
        )
    )


async def test_only_the_configured_claim_makes_an_admin() -> None:
    custom = verifier(("org_role", "org:admin"))
    role_admin = issue_token(SECRET, "u1", admin=True)  # "role": "admin"
    assert not (await custom.verify(role_admin)).admin
    org_admin = issue_token(SECRET, "u1", admin=True, admin_claim=("org_role", "org:admin"))
    assert (await custom.verify(org_admin)).admin
    assert not (await verifier(("role", "admin")).verify(org_admin)).admin
    listed = issue_token(SECRET, "u1", admin=True, admin_claim=("roles", "x"))
    assert not (await verifier(("roles", "admin")).verify(listed)).admin


async def test_a_list_claim_holding_the_value_is_admin() -> None:
    import jwt

    token = jwt.encode({"sub": "u1", "exp": 2**31, "roles": ["viewer", "admin"]}, SECRET)
    assert (await verifier(("roles", "admin")).verify(token)).admin
    token = jwt.encode({"sub": "u1", "exp": 2**31, "roles": "administrator"}, SECRET)
    assert not (await verifier(("roles", "admin")).verify(token)).admin


# --- text that cannot reach SQL (finding 3) ------------------------------------------


@pytest.mark.parametrize("sub", ["user\x00x", "\x00", "u" * 256])
async def test_a_signed_token_with_an_unusable_sub_is_refused(sub: str) -> None:
    import jwt

    token = jwt.encode({"sub": sub, "exp": 2**31}, SECRET)
    with pytest.raises(AuthError) as info:
        await verifier(("role", "admin")).verify(token)
    assert info.value.code == "invalid_token"


async def test_an_exp_beyond_any_float_is_refused_not_raised() -> None:
    import jwt

    token = jwt.encode({"sub": "u1", "exp": 10**400}, SECRET)
    with pytest.raises(AuthError, match="'exp'"):
        await verifier(("role", "admin")).verify(token)


@pytest.mark.parametrize("token", ["abc\x00def", "\ud800", "a.b.\udcff"])
async def test_a_token_that_is_not_text_is_malformed(token: str) -> None:
    with pytest.raises(AuthError, match="malformed"):
        await verifier(("role", "admin")).verify(token)


def test_user_ids_and_json_are_checked() -> None:
    assert inputs.user_id("user_2z") == "user_2z"
    for bad in ("", "a\x00", "x" * 256, "\ud800"):
        with pytest.raises(inputs.InvalidInput):
            inputs.user_id(bad)
    inputs.check_json({"a": [1, {"b": "c"}]})
    deep: object = "leaf"
    for _ in range(65):
        deep = [deep]
    with pytest.raises(inputs.InvalidInput, match="nested deeper than 64"):
        inputs.check_json(deep)
    assert inputs.decode_json(b'{"amount": 1.5, "n": 1e300}') is not None
    for body in (
        b"[" * 70 + b"]" * 70,
        b"[" * 5000 + b"]" * 5000,
        b"0." + b"1" * 2000,
        b"{",
        b"1E0" + b"1" * 5000,
    ):
        with pytest.raises(inputs.InvalidInput):
            inputs.decode_json(body)
    for bad_doc in ({"a\x00": 1}, {"a": ["x\x00"]}, "\ud800"):
        with pytest.raises(inputs.InvalidInput, match="NUL"):
            inputs.check_json(bad_doc)


# --- messages to clients (finding 5) ---------------------------------------------------


def client_message(exc: stripe.StripeError) -> str:
    return stripe_failed(exc).message


def test_stripe_messages_reach_clients_only_for_card_errors() -> None:
    said = "No such subscription: 'sub_1Abc'"
    body = {"error": {"message": said}}
    missing = stripe.InvalidRequestError(said, "id", json_body=body)  # type: ignore[no-untyped-call]
    assert missing.user_message == said  # what used to reach the browser
    text = client_message(missing)
    assert "sub_" not in text and "Stripe did not accept the change" in text
    api = stripe.APIError("Invalid API Key provided: sk_test_123")
    assert "sk_" not in client_message(api)
    card = stripe.CardError(  # type: ignore[no-untyped-call]
        "Your card was declined.",
        None,
        "card_declined",
        json_body={"error": {"message": "Your card was declined."}},
    )
    assert client_message(card) == "Your card was declined."


# --- logs (finding 9) ----------------------------------------------------------------


def test_access_log_lines_lose_their_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/state?user_id=user_secret&x=1", "1.1", 200),
        None,
    )
    assert DropQueryStrings().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /v1/state HTTP/1.1" 200'


def test_stripe_and_httpx_request_lines_are_not_logged_at_info() -> None:
    loggers = log_config()["loggers"]
    for name in ("stripe", "httpx"):
        assert loggers[name]["level"] == "WARNING"
    assert loggers["uvicorn.access"]["filters"] == ["drop_query_strings"]


def test_statebus_token_with_a_short_secret_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from statebus.cli import main

    monkeypatch.setenv("STATEBUS_HOME", str(tmp_path))
    monkeypatch.setenv("STATEBUS_JWT_SECRET", "too-short")
    assert main(["token", "user_1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "at least 32 bytes" in err and "Traceback" not in err
    assert "too-short" not in err


def test_statebus_token_with_an_empty_user_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from statebus.cli import main

    monkeypatch.setenv("STATEBUS_HOME", str(tmp_path))
    monkeypatch.setenv("STATEBUS_JWT_SECRET", SECRET)
    assert main(["token", ""]) == 2
    assert "user_id must not be empty" in capsys.readouterr().err


def test_statebus_serve_refuses_a_mistyped_environment_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from statebus.cli import main

    monkeypatch.setenv("STATEBUS_HOME", str(tmp_path))
    monkeypatch.setenv("STATEBUS_ENV", "prod")
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "statebus: STATEBUS_ENV must be 'development' or 'production', not 'prod'\n"
    assert not (tmp_path / "jwt_secret").exists()
