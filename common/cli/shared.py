"""What every `tasklab` sub-command shares: one-line errors, the settings, reading a document.

Its own module so that sub-command modules (`bus`, ...) can use these without importing
`common.cli.main`, which imports them to register their apps: that would be an import cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.cli.backend import CliError
from common.cli.errors import fail
from common.config import ConfigError, Settings, get_settings
from common.domain.task import NotStrictJSON, strict_json

__all__ = ["fail", "read_document", "settings"]


def settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable; keeps type checkers calm


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def read_document(source: str, what: str) -> dict[str, Any]:
    """The JSON object in the file `source` (`-` = stdin): a command's `what` document.

    Raises CliError (exit code 2) with one line that says why there is none: the file missing
    or unreadable, bytes that are not UTF-8, text that is not JSON (where: line and column),
    or JSON that is not an object. Read as bytes, so that bad UTF-8 is said like bad JSON,
    with where it is, and not as a decoding error of the whole command.
    """
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            # The bytes under the text stream, when there are (there are but on a stream
            # replaced by a bare text one).
            stream = getattr(sys.stdin, "buffer", sys.stdin)
            raw: bytes | str = stream.read()
        else:
            raw = Path(source).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}", 2) from None
    if not raw.strip():
        raise CliError(f"{name}: empty, not a {what} document", 2)
    try:
        doc = strict_json(raw)
    except NotStrictJSON as exc:
        raise CliError(f"{name}: not a JSON document ({exc})", 2) from None
    if not isinstance(doc, dict):
        kind = _JSON_KINDS.get(type(doc), type(doc).__name__)
        raise CliError(f"{name}: a {what} document is a JSON object, not {kind}", 2)
    return doc
