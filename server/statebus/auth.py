"""User tokens: verify a bearer JWT into a `Principal`, and issue HS256 tokens for dev and tests.

Tokens carry `sub` (the user id) and `exp`, both required; a token carrying the admin claim
(`STATEBUS_ADMIN_CLAIM`, by default `"role": "admin"`) may read any user.
With a JWKS URL configured, only RS256/ES256 tokens signed by a published key are accepted and
the shared secret is unused; otherwise only HS256 with the shared secret. The accepted
algorithms are always passed explicitly, so a token cannot choose its own verification
(`alg: none`, or an HS256 token "signed" with a public key).

Must never: log a token, or put a token or secret into an error message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx
import jwt
from jwt.types import Options

from statebus.inputs import MAX_USER_ID_CHARS, is_clean_text
from statebus.jwks import ACCEPTED_ALGORITHMS, JwksCache

AuthErrorCode = Literal["invalid_token", "token_expired", "forbidden"]

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
DEFAULT_ADMIN_CLAIM = ("role", "admin")
MAX_TOKEN_CHARS = 16_384  # far above any real JWT; bounds the work a garbage token costs


class AuthError(Exception):
    """A token was refused. `code` goes on the wire; `message` is safe to show to the client."""

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: AuthErrorCode = code
        self.message = message


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool
    expires_at: float  # unix seconds, from the token's `exp`


@dataclass(frozen=True)
class AuthSettings:
    secret: str | None
    jwks_url: str | None
    audience: str | None
    issuer: str | None
    leeway: float = 0
    admin_claim: tuple[str, str] = DEFAULT_ADMIN_CLAIM


class TokenVerifier:
    """Turns a token into a `Principal` or raises `AuthError`. One per process; share it."""

    def __init__(self, settings: AuthSettings, *, http: httpx.AsyncClient | None = None) -> None:
        if settings.jwks_url is None:
            if settings.secret is None:
                raise ValueError("configure a JWT secret or a JWKS URL")
            _check_secret(settings.secret)
        self.settings = settings
        self._owned_http: httpx.AsyncClient | None = None
        self.jwks: JwksCache | None = None
        if settings.jwks_url is not None:
            if http is None:
                http = self._owned_http = httpx.AsyncClient(timeout=5.0)
            self.jwks = JwksCache(settings.jwks_url, http)

    async def verify(self, token: str) -> Principal:
        """The principal a valid token names; `AuthError` for anything else."""
        # A socket's auth message is JSON, whose escapes can carry NUL or a lone surrogate.
        if not token or len(token) > MAX_TOKEN_CHARS or not is_clean_text(token):
            raise AuthError("invalid_token", "token is malformed")
        try:
            claims = await self._decode(token)
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "token has expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", _describe(exc)) from None
        user_id = claims["sub"]  # PyJWT has checked it is present and a string
        if not user_id:
            raise AuthError("invalid_token", "token has an empty 'sub' claim")
        # A signed token is still input: its `sub` goes into SQL parameters.
        if len(user_id) > MAX_USER_ID_CHARS or not is_clean_text(user_id):
            raise AuthError("invalid_token", "token has an invalid 'sub' claim")
        try:
            expires_at = float(claims["exp"])  # PyJWT checked int(exp); 10**400 is no float
        except OverflowError:
            raise AuthError("invalid_token", "token has an invalid 'exp' claim") from None
        return Principal(
            user_id=user_id,
            admin=is_admin(claims, self.settings.admin_claim),
            expires_at=expires_at,
        )

    def may_read(self, principal: Principal, user_id: str) -> bool:
        """Whether `principal` may read `user_id`'s state: its own, or anyone's for an admin."""
        return principal.admin or principal.user_id == user_id

    async def aclose(self) -> None:
        """Close the HTTP client this verifier made itself (never one that was passed in)."""
        if self._owned_http is not None:
            await self._owned_http.aclose()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _decode(self, token: str) -> dict[str, Any]:
        s = self.settings
        options: Options = {
            "require": ["sub", "exp"],
            "verify_aud": s.audience is not None,
            "enforce_minimum_key_length": True,  # a weak key is refused, not merely warned about
        }
        if self.jwks is None:
            assert s.secret is not None  # checked in __init__
            key: jwt.PyJWK | str = s.secret
            algorithms = ["HS256"]
        else:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ACCEPTED_ALGORITHMS:
                raise jwt.InvalidAlgorithmError("algorithm not accepted")
            kid = header.get("kid")
            found = await self.jwks.get(kid) if isinstance(kid, str) else None
            if found is None:
                raise AuthError("invalid_token", "token is signed by an unknown key")
            # PyJWT also refuses a token whose `alg` differs from the key's own algorithm.
            key, algorithms = found, [found.algorithm_name]
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            options=options,
            audience=s.audience,
            issuer=s.issuer,
            leeway=s.leeway,
        )


def issue_token(
    secret: str,
    user_id: str,
    *,
    ttl: int = 3600,
    admin: bool = False,
    audience: str | None = None,
    issuer: str | None = None,
    admin_claim: tuple[str, str] = DEFAULT_ADMIN_CLAIM,
) -> str:
    """An HS256 token for `user_id`, valid for `ttl` seconds (what `statebus token` prints)."""
    _check_secret(secret)
    if not user_id:
        raise ValueError("user_id must not be empty")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl}
    if admin:
        claims[admin_claim[0]] = admin_claim[1]
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def is_admin(claims: dict[str, Any], admin_claim: tuple[str, str]) -> bool:
    """The claim holds exactly the configured value, or is a list of strings that holds it."""
    name, wanted = admin_claim
    value = claims.get(name)
    if isinstance(value, list):
        return wanted in (item for item in value if isinstance(item, str))
    return isinstance(value, str) and value == wanted


def bearer_token(authorization_header: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    parts = (authorization_header or "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


def _check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")


# Most specific first: InvalidSignatureError is a DecodeError, for one.
_MESSAGES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidKeyError, "token signing key is not accepted"),
)


def _describe(exc: jwt.PyJWTError) -> str:
    """A fixed message per failure: PyJWT's own texts may quote parts of the token."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim"  # a claim name from our own require list
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return message
    return "token is malformed or invalid"
