"""Who is calling: an API key (`X-API-Key`) or an HS256 JWT (`Authorization: Bearer ...`).

One Authenticator serves both front doors. The REST API's AuthLink hands it the request's
headers, the gRPC providers' interceptor the call's metadata (lower-case keys, the same names),
so a key means the same thing on either path.

- API keys come from API_KEYS (`{"KEY": ["Admin"]}`). A presented key is hashed and compared
  with every configured key's hash in constant time, all of them every time: how long the check
  takes does not tell a guesser which key, or how much of one, was right.
- A key's principal is named by a fingerprint (the first 12 hex digits of its SHA-256): stable
  across replicas, so the rate limiter and the logs can tell keys apart, and not the key.
- Tokens are HS256 only (a token saying `alg: none`, or any other algorithm, is refused), must
  carry `exp` (checked) and `sub` (the principal's name); roles come from the `roles` claim.
  Role names this platform does not know are ignored, so a token from an identity provider
  that also grants other systems' roles still works for ours.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

import jwt

from common.config.settings import ROLE_NAMES, Settings, check_auth
from common.security import ANONYMOUS, Principal, Role

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
ALGORITHM = "HS256"
# A credential longer than this is not one we issued: refused before it is hashed or parsed.
MAX_CREDENTIAL_CHARS = 8192


class Unauthenticated(Exception):
    """No credential, or one that does not check out. `reason` is safe to show the caller
    (it never repeats the credential); `error` is RFC 6750's code for the challenge."""

    def __init__(self, reason: str, *, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def challenge(self, realm: str = "tasklab") -> str:
        """The WWW-Authenticate value: both schemes this API accepts (RFC 9110 11.6.1)."""
        bearer = f'Bearer realm="{realm}"'
        if self.error:
            bearer += f', error="{self.error}"'
        return f'{bearer}, ApiKey realm="{realm}", header="X-API-Key"'


def _metadata_safe(value: str) -> bool:
    # What a gRPC metadata value may hold (printable ASCII); nothing else can be a credential.
    return all(" " <= ch <= "~" for ch in value)


def credential_metadata(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The credential to pass on to the gRPC providers: the one `authenticate` decides by
    (X-API-Key if present, else Authorization), as lower-case metadata, or nothing.

    A value gRPC metadata cannot carry is dropped instead of failing the call: with auth on,
    such a value was already refused (no key or token has it); with auth off, a client's
    stray header is no credential.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in (API_KEY_HEADER, AUTHORIZATION_HEADER):
        value = lowered.get(name)
        if value is not None:
            return [(name, value)] if value and _metadata_safe(value) else []
    return []


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _roles(names: Iterable[str]) -> frozenset[Role]:
    return frozenset(Role(name) for name in names if name in ROLE_NAMES)


class Authenticator:
    def __init__(
        self,
        *,
        enabled: bool,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        jwt_secret: str | None = None,
        jwt_leeway: float = 0.0,
        jwt_audience: str = "",
        jwt_issuer: str = "",
    ) -> None:
        self.enabled = enabled
        # (digest, principal) pairs: the keys themselves are not kept.
        self._keys = [
            (_digest(key), Principal(f"key:{fingerprint(key)}", _roles(roles)))
            for key, roles in (api_keys or {}).items()
        ]
        self._secret = jwt_secret
        self._leeway = jwt_leeway
        self._audience = jwt_audience or None
        self._issuer = jwt_issuer or None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The settings' authenticator; ConfigError if auth is required with no credential."""
        check_auth(settings)
        auth = settings.api.auth
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        return cls(
            enabled=settings.auth_enabled,
            api_keys=settings.api_keys,
            jwt_secret=secret,
            jwt_leeway=auth.jwt_leeway,
            jwt_audience=auth.jwt_audience,
            jwt_issuer=auth.jwt_issuer,
        )

    @property
    def accepts_tokens(self) -> bool:
        return self._secret is not None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller named by `headers` (any case), or raise Unauthenticated.

        With auth off every caller is ANONYMOUS (who holds Admin). An `X-API-Key` header, when
        present, decides alone: a wrong key is refused even if a valid token rides along, so
        a caller is never silently someone other than the credential it meant to use.
        """
        if not self.enabled:
            return ANONYMOUS
        lowered = {k.lower(): v for k, v in headers.items()}
        key = lowered.get(API_KEY_HEADER)
        if key is not None:
            return self._by_key(key)
        authorization = lowered.get(AUTHORIZATION_HEADER)
        if authorization is not None:
            return self._by_token(authorization)
        raise Unauthenticated(
            "no credential: send X-API-Key: KEY or Authorization: Bearer TOKEN", error=""
        )

    def _by_key(self, key: str) -> Principal:
        if not key or len(key) > MAX_CREDENTIAL_CHARS:
            raise Unauthenticated("unknown API key")
        presented = _digest(key)
        found = None
        for digest, principal in self._keys:
            # No early exit: every configured key is compared, whichever one matches.
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise Unauthenticated("unknown API key")
        return found

    def _by_token(self, authorization: str) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "the Authorization header must be `Bearer TOKEN`", error="invalid_request"
            )
        if self._secret is None:
            raise Unauthenticated("bearer tokens are not accepted here: no JWT secret is set")
        token = token.strip()
        if len(token) > MAX_CREDENTIAL_CHARS:
            raise Unauthenticated("token is malformed")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=self._leeway,
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": ["exp", "sub"],
                    # Without a configured audience, a token's `aud` is not ours to judge.
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the required {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(f"token algorithm not accepted (only {ALGORITHM})") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature does not verify") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token is from another issuer") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is malformed") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token's sub claim must be a non-empty string")
        roles = claims.get("roles", [])
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            raise Unauthenticated("token's roles claim must be a list of role names")
        return Principal(f"jwt:{subject[:200]}", _roles(r for r in roles if isinstance(r, str)))
