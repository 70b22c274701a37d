"""Request handling as a chain of responsibility: auth -> rate limit -> size -> (the app:
validation -> idempotency -> command).

Pattern: Chain of Responsibility (introduced in stage 4). Each link is one small pure-ASGI
class that either answers the request itself, with a Problem, or passes it to the next link.
A refused request goes no further: an unknown caller never costs a Redis round trip, a caller
over its limit never has its body read, and an oversized body never reaches the app.

`install_links(app, settings, redis)` puts them in front of the app, outermost first:

    CORS -> AuthLink -> RateLimitLink -> BodyLimitLink -> the app

CORS sits in front of auth on purpose: a browser's preflight (OPTIONS with
Access-Control-Request-Method) carries no credentials by the Fetch standard, so it must be
answered before auth asks for one; and the 401/429/413 answers of the links behind it then
carry the CORS headers, so a browser page can read why it was refused.

`require(role)` is the route dependency that checks the authenticated principal's role (403
otherwise); it also declares the two security schemes, so the OpenAPI document shows them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.middleware.cors import CORSMiddleware

from common.api.catalog import problem
from common.api.problems import Problem
from common.security import ANONYMOUS, Principal, Role
from common.security.authenticator import Authenticator, Unauthenticated, credential_metadata
from common.security.ratelimit import RateLimiter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Reachable without a credential: probes, the API's own description and its problem pages;
# the console's login form, logout and static files (common.api.console.session).
PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/openapi.json", "/docs", "/redoc", "/metrics", "/ui/login", "/ui/logout"}
)
PUBLIC_PREFIXES = ("/problems/", "/docs/", "/ui/static/")
PRINCIPAL = "principal"  # the key in scope["state"] (request.state.principal)
CREDENTIALS = "credentials"  # scope["state"]: the credential to pass on as gRPC metadata
AUTH_ENABLED = "tasklab_auth_enabled"  # on app.state, set by install_links


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def principal_of(scope: Scope) -> Principal | None:
    return scope.get("state", {}).get(PRINCIPAL)


def forwarded_credentials(scope: Scope) -> list[tuple[str, str]]:
    """The caller's credential as gRPC metadata for the providers (`metadata=` of the proxy):
    the header the caller was authenticated by, or [] when there is none gRPC can carry.
    Pass `request.scope`."""
    state = scope.get("state", {})
    if CREDENTIALS in state:
        return list(state[CREDENTIALS])
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    return credential_metadata(headers)  # the links are not installed (a bare app)


async def _answer(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    await problem.response(instance=scope.get("path", ""))(scope, receive, send)


# --8<-- [start:auth-link]
class AuthLink:
    """401 unless the request carries a valid credential; the principal goes to
    scope["state"]["principal"] for the links and routes behind."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            principal = self.authenticator.authenticate(headers)
        except Unauthenticated as exc:
            refusal = problem(
                "unauthenticated", exc.reason, headers={"WWW-Authenticate": exc.challenge()}
            )
            await _answer(refusal, scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL] = principal
        state[CREDENTIALS] = credential_metadata(headers)
        await self.app(scope, receive, send)


# --8<-- [end:auth-link]


class RateLimitLink:
    """429 with Retry-After when the caller's token bucket (shared in Redis) is empty.

    The bucket is per principal: a key (by its fingerprint) or a token's subject. With auth
    off every caller is ANONYMOUS and there is no key to count by, so nothing is limited (the
    issue's "per-key rate limiting"; turn auth on to flood a key into 429s).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, timeout: float = 0.5) -> None:
        self.app = app
        self.limiter = limiter
        self.timeout = timeout
        # Checks on a sync client run in threads of their own: while Redis hangs, the threads
        # waiting on it are these, not the ones the app's routes need.
        self._threads = anyio.CapacityLimiter(16)

    async def _take(self, name: str):
        if self.limiter.is_async:
            return await self.limiter.take_async(name)
        # A sync client would block the event loop for a round trip: run it in a thread. If
        # the wait is cut short (below), the thread finishes on its own, within the client's
        # socket timeout, and its answer is dropped.
        return await anyio.to_thread.run_sync(
            self.limiter.take, name, abandon_on_cancel=True, limiter=self._threads
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_of(scope) if scope["type"] == "http" else None
        if principal is None or principal is ANONYMOUS:
            await self.app(scope, receive, send)
            return
        decision = None
        with anyio.move_on_after(self.timeout):
            decision = await self._take(principal.name)
        if decision is None:  # Redis hangs: the same outage as Redis refusing, fail open
            decision = self.limiter.unchecked(f"no answer within {self.timeout:g} s")
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        # RFC 9110 10.2.3: delay-seconds is a whole number; round up so a caller that waits
        # exactly that long finds a token.
        wait = max(1, math.ceil(decision.retry_after))
        refusal = problem(
            "rate-limited",
            f"{principal.name} may make {self.limiter.rate:g} requests per second with bursts "
            f"of {self.limiter.burst}; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
        await _answer(refusal, scope, receive, send)


COMPOSITES_PATH = "/api/v1/composites"


class _TooLarge(Exception):
    pass


class BodyLimitLink:
    """413 for a body over the limit, before the app sees any of it; 414/431 for a URL or
    headers over theirs.

    - A Content-Length over the limit is refused at once, nothing read.
    - A chunked body (no Content-Length) is read here, counting, and refused the moment the
      count passes the limit, without waiting for the rest; one within the limit is handed
      to the app whole. So the app never sees a partial body, and a client streaming forever
      costs at most `max_body_bytes` of memory.
    - A request with neither has no body (RFC 9112 6.3) and passes untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_url_bytes: int = 8192,
        max_header_bytes: int = 16384,
        path_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_url = max_url_bytes
        self.max_headers = max_header_bytes
        # Paths whose bodies may be larger than a task's (a composite document): exact paths.
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check_head(scope)
        if problem is not None:
            await _answer(problem, scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_body)
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None:
            # The server checked it is a number and will deliver exactly this many bytes.
            if int(length) > limit:
                problem = self._too_large(limit, f"Content-Length is {int(length)}")
                await _answer(problem, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if chunked is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_within_limit(receive, limit)
        except _TooLarge:
            problem = self._too_large(limit, "the chunked body passed it")
            await _answer(problem, scope, receive, send)
            return
        if body is None:  # the client went away mid-body: nobody to answer
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_head(self, scope: Scope) -> Problem | None:
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if url > self.max_url:
            return problem(
                "uri-too-long",
                f"the path and query are {url} bytes; the limit is {self.max_url}",
            )
        size = sum(len(k) + len(v) + 4 for k, v in scope["headers"])  # "k: v\r\n"
        if size > self.max_headers:
            return problem(
                "headers-too-large",
                f"the headers are {size} bytes; the limit is {self.max_headers}",
            )
        return None

    def _too_large(self, limit: int, what: str) -> Problem:
        return problem(
            "payload-too-large",
            f"the request body may be at most {limit} bytes; {what}",
        )

    async def _read_within_limit(self, receive: Receive, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:  # bounded: each round reads a chunk, and the total is capped below
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the whole body at once, then the server's own messages
    (a disconnect, eventually)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# -- the route side: roles, and the schemes the OpenAPI document shows ------------------------
# Declared as FastAPI security dependencies of `require`, so every route that requires a role
# lists both schemes in the document and "Authorize" in /docs offers them. auto_error=False:
# they only describe; AuthLink has already checked the credential.
_API_KEY_SCHEME = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKeyAuth",
    description="An API key from API_KEYS, with its roles (TaskRead, TaskWrite, Admin).",
    auto_error=False,
)
_BEARER_SCHEME = HTTPBearer(
    scheme_name="BearerAuth",
    bearerFormat="JWT",
    description="An HS256 JWT signed with JWT_SECRET: `sub`, `exp` and a `roles` claim.",
    auto_error=False,
)

# For a route's `responses=`: what the links may answer instead of the route, on any path
# (414 and 431 as well: a generated long query string must find its answer documented).
SECURITY_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No credential, or one that does not check out (problem+json)."},
    403: {"description": "The caller lacks the role this call needs (problem+json)."},
    413: {"description": "The request body is over the limit (problem+json)."},
    414: {"description": "The path and query are over the limit (problem+json)."},
    429: {"description": "The caller's rate limit is spent; see Retry-After (problem+json)."},
    431: {"description": "The request's headers are over the limit (problem+json)."},
}


def require(role: Role):
    """A FastAPI dependency: the caller's Principal, if it holds `role` (else 403).

    Admin implies every role and TaskWrite implies TaskRead (Principal.may). A request that
    reached the route without a principal passed no AuthLink: with auth off (or the links not
    installed, as in a bare app under test) that is the anonymous caller; with auth on it is
    refused, so a route mounted on a public path by mistake is not open.
    """

    # async: it only reads the request's scope, and FastAPI would run a plain `def` on its
    # thread pool, a hop to another thread and back for every request.
    async def dependency(
        request: Request,
        _key: str | None = Security(_API_KEY_SCHEME),
        _token: Any = Security(_BEARER_SCHEME),
    ) -> Principal:
        principal = principal_of(request.scope)
        if principal is None:
            if getattr(request.app.state, AUTH_ENABLED, False):
                raise problem(
                    "unauthenticated",
                    "this call needs a credential",
                    headers={"WWW-Authenticate": Unauthenticated("", error="").challenge()},
                )
            principal = ANONYMOUS
        if not principal.may(role):
            held = ", ".join(sorted(principal.roles)) or "no roles"
            raise problem(
                "forbidden",
                f"this call needs the {role.value} role; {principal.name} has {held}",
            )
        return principal

    return dependency


# -- putting it together ----------------------------------------------------------------------
CORS_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
CORS_HEADERS = ("X-API-Key", "Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
CORS_EXPOSED = ("Location", "Retry-After", "WWW-Authenticate")


# --8<-- [start:install-links]
def install_links(app: Any, settings: Any, redis: Any) -> None:
    """Add the links to `app` (a FastAPI/Starlette app, before it starts), outermost first:
    CORS -> auth -> rate limit -> size. Raises ConfigError if auth is required but neither
    keys nor a JWT secret is set (the API refuses to start).

    `redis` is the client the rate limiter keeps its buckets in: redis.asyncio (awaited on
    the event loop) or a sync client (run in a worker thread).
    """
    authenticator = Authenticator.from_settings(settings)
    setattr(app.state, AUTH_ENABLED, authenticator.enabled)
    security = settings.api.security
    limits = settings.api.rate_limiting
    # add_middleware puts each new one outside the ones added before: add innermost first.
    app.add_middleware(
        BodyLimitLink,
        max_body_bytes=settings.max_body_bytes,
        max_url_bytes=security.max_url_bytes,
        max_header_bytes=security.max_header_bytes,
        path_limits={COMPOSITES_PATH: settings.max_document_body_bytes},
    )
    if limits.enabled and authenticator.enabled:
        if redis is None:
            raise ValueError("rate limiting is on: install_links needs a Redis client")
        app.add_middleware(
            RateLimitLink,
            limiter=RateLimiter.from_settings(settings, redis),
            timeout=limits.redis_timeout,
        )
    app.add_middleware(AuthLink, authenticator=authenticator)
    app.state.tasklab_authenticator = authenticator  # the console's login asks it too
    # Always installed, even with no origins: a preflight is then refused by CORS (400), not
    # asked for a key it cannot carry (401).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(security.cors_origins),
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED,
        # Credentials are headers the page sets, not cookies: no allow_credentials needed.
        allow_credentials=False,
        max_age=600,
    )


# --8<-- [end:install-links]
