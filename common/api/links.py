"""Request handling as a chain of responsibility: auth -> rate limit -> size -> (the app:
validation -> idempotency -> command). The first three are ASGI links, each one small class
that answers with a Problem or passes the request on, so a refused request is refused before
its body is read.

`install_links(app, settings, redis)` adds them in order; `require(role)` is the route
dependency that checks the authenticated principal's role.
"""

from __future__ import annotations

from typing import Any

from common.security import ANONYMOUS, Principal, Role


def install_links(app: Any, settings: Any, redis: Any) -> None:
    """Add the ASGI links to `app`, outermost first. (Filled in with the security slice.)"""


def require(role: Role):
    """A FastAPI dependency: the caller's Principal, if it holds `role` (else 403)."""

    def dependency() -> Principal:
        return ANONYMOUS

    return dependency
