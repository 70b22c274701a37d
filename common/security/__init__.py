"""Who is calling and what they may do: API keys with roles, HS256 JWT bearer tokens, and a
per-key token bucket shared through Redis. One authority for both front doors: the REST API's
links (common.api.links) and the gRPC providers' interceptor (common.rpc) ask the same
`Authenticator`, so a key means the same thing on either path.

- `common.security.authenticator`: Authenticator (keys and tokens -> a Principal), Unauthenticated
- `common.security.ratelimit`: RateLimiter, the token bucket in Redis (fails open, and why)
This module: the roles, what each implies, and the Principal both front doors pass along."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """The deployment guide's roles. Admin implies the other two; TaskWrite implies TaskRead."""

    TASK_READ = "TaskRead"
    TASK_WRITE = "TaskWrite"
    ADMIN = "Admin"


IMPLIED: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN, Role.TASK_WRITE, Role.TASK_READ}),
    Role.TASK_WRITE: frozenset({Role.TASK_WRITE, Role.TASK_READ}),
    Role.TASK_READ: frozenset({Role.TASK_READ}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `name` identifies it for rate limiting and logs (never the
    secret itself); `roles` are as granted, `may()` applies the implications."""

    name: str
    roles: frozenset[Role] = field(default_factory=frozenset)

    def may(self, role: Role) -> bool:
        return any(role in IMPLIED[granted] for granted in self.roles)


# With auth off (the local profile) every caller is this one.
ANONYMOUS = Principal(name="anonymous", roles=frozenset({Role.ADMIN}))
