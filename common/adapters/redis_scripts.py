"""Load tasklab's Lua scripts, each prefixed with the transition table generated from Python.

Why Lua: a transition must read the current state and attempt/epoch and write the new state
*atomically*. Redis runs a script with nothing interleaved, so check-then-write has no race, and
a script is one round trip where WATCH/MULTI would be at least three.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script

from common.domain.transitions import LEGAL_TRANSITIONS


# --8<-- [start:legal]
def legal_table_lua() -> str:
    rows = []
    for src, nexts in sorted(LEGAL_TRANSITIONS.items(), key=lambda kv: kv[0].value):
        inner = ", ".join(f"{d.value} = true" for d in sorted(nexts, key=lambda s: s.value))
        rows.append(f"  {src.value} = {{{inner}}},")
    return "local LEGAL = {\n" + "\n".join(rows) + "\n}\n"


# --8<-- [end:legal]


@cache
def script_source(name: str, *libs: str) -> str:
    """LEGAL + prelude + the named library files (Lua functions only) + the script body."""
    lua = resources.files("common.adapters") / "lua"
    prelude = (lua / "prelude.lua").read_text()
    parts = [(lua / f"{lib}.lua").read_text() for lib in libs]
    body = (lua / f"{name}.lua").read_text()
    return legal_table_lua() + prelude + "\n" + "\n".join([*parts, body])


class Scripts:
    """The registered scripts for one Redis client (EVALSHA, falling back to EVAL once)."""

    NAMES = ("transition", "submit", "claim", "cancel", "promote")
    # Library files a script is built with: the claim's one decision is shared with the
    # chained report (finish_take.lua); the archive's outbox entry with every script that ends
    # a task without an agent's report (archive_outbox.lua).
    LIBS = {
        "claim": ("claim_task",),
        "transition": ("archive_outbox",),
        "cancel": ("archive_outbox",),
    }

    def __init__(self, client: Redis) -> None:
        for name in self.NAMES:
            source = script_source(name, *self.LIBS.get(name, ()))
            setattr(self, name, client.register_script(source))

    transition: Script
    submit: Script
    claim: Script
    cancel: Script
    promote: Script
