"""The console's session: an API key kept in a cookie, and the check that a form was posted
by the console itself.

Login stores the key the operator typed in `tasklab_console_key`: HttpOnly (no script, so no
injected script either, can read it), SameSite=Strict (the browser attaches it to no request
another site starts), Path=/ui (the REST API never sees it: its callers send headers, and a
cookie it honoured would make every REST route a target of cross-site requests), and Secure
when the console is served over https. `ConsoleLink`, in front of the auth link, turns the
cookie into the `X-API-Key` header AuthLink reads, so the console is authenticated, rate
limited and role-checked exactly as a REST call with that key is.

Cross-site request forgery: SameSite=Strict plus an Origin check, no token. SameSite=Strict
already keeps the key off any request another site triggers, so a forged POST arrives with no
credential and goes no further; the Origin check (every POST under /ui/ must carry an
`Origin`, or failing that a `Referer`, of this very host) covers what SameSite does not: a
sibling origin of the same site (another port or subdomain counts as same-site) and a console
running with auth off, where there is no cookie to withhold and a page on any site could
otherwise post to it. A double-submit token would need a value in every form and every htmx
request and is undone by any same-site origin that can set a cookie; the Origin header is set
by the browser and cannot be forged by a page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from common.security.authenticator import Authenticator, Unauthenticated

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PREFIX = "/ui"
COOKIE = "tasklab_console_key"
LOGIN = "/ui/login"
# Reachable without a key: the login form itself, logout (it only forgets a cookie) and the
# static files (the login page needs its stylesheet).
PUBLIC_PATHS = frozenset({LOGIN, "/ui/logout"})
PUBLIC_PREFIXES = ("/ui/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def same_origin(scope: Scope) -> bool:
    """The request was sent by a page of this host: its Origin (or Referer) names this
    scheme, host and port. A request naming neither is refused: every browser sends Origin
    with a POST, so only a non-browser client (which needs no form) lacks both."""
    host = _header(scope, b"host")
    if not host:
        return False
    claimed = _header(scope, b"origin")
    if claimed is None or claimed == "null":
        referer = _header(scope, b"referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        claimed = f"{parts.scheme}://{parts.netloc}"
    parts = urlsplit(claimed)
    scheme = scope.get("scheme", "http")
    return parts.scheme == scheme and parts.netloc.lower() == host.lower()


def safe_next(target: str | None) -> str:
    """Where to go after login: a console path only, never another site (an open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        if "\\" not in target and "//" not in target:
            return target
    return PREFIX + "/tasks"


def set_key_cookie(response: Response, key: str, secure: bool) -> None:
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", secure=secure, path=PREFIX)


def forget_key_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure, path=PREFIX)


class ConsoleLink:
    """For /ui/ only (everything else passes untouched): POSTs from another origin are
    refused (403); the key cookie becomes the X-API-Key header; with auth on, a request
    without a valid key is sent to the login page instead of answered with a 401 problem."""

    def __init__(self, app, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console(scope["path"]):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if scope["method"] not in SAFE_METHODS and not same_origin(scope):
            refusal = PlainTextResponse(
                "403: a console form must be posted from the console's own origin "
                "(this request's Origin or Referer names another, or none)",
                status_code=403,
            )
            await refusal(scope, receive, send)
            return
        if is_public(path):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        names = {k for k, _ in headers}
        if b"x-api-key" not in names and b"authorization" not in names:
            key = cookie_parser(_header(scope, b"cookie") or "").get(COOKIE)
            if key:
                headers.append((b"x-api-key", key.encode("latin-1", "replace")))
                scope = {**scope, "headers": headers}
        if self.authenticator.enabled:
            try:
                self.authenticator.authenticate(
                    {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
                )
            except Unauthenticated:
                await self._to_login(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _to_login(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        here = scope["path"] + (f"?{query}" if query else "")
        target = f"{LOGIN}?next={quote(here, safe='')}"
        if _header(scope, b"hx-request"):
            # An htmx request (a table refreshing): htmx would swap a redirect's page into
            # the table; HX-Redirect makes it load the login page as a whole instead.
            answer: Response = Response(status_code=200, headers={"HX-Redirect": target})
        else:
            answer = RedirectResponse(target, status_code=303)
        await answer(scope, receive, send)
