"""`tasklab logs --all`: what every role logged, read back from the log store with LogsQL.

The roles ship their JSON lines to VictoriaLogs (common/observability/logshipping.py); this is
the reading side. One query (`/select/logsql/query`) filters on the fields every line carries
(`taskId`, `role`, the time), and the store sorts by time: the lines of the agent, the
scheduler, the manager and the front door about one task come back as one story.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from common.cli.backend import CliError
from common.config.durations import parse_duration
from common.observability.logshipping import InvalidLogsUrl, check_logs_url

LOGS_URL_ENV = "TASKLAB_LOGS_URL"
QUERY_PATH = "/select/logsql/query"


def _quoted(value: str) -> str:
    # A JSON string is a LogsQL quoted string: the same escapes, so no value can end the
    # filter early or add one of its own.
    return json.dumps(value)


def build_query(task: str | None, role: str | None, since: str | None, limit: int) -> str:
    """The LogsQL for these filters: the newest `limit` lines, newest first (the caller
    reverses them, so a long story shows its end rather than its beginning)."""
    filters: list[str] = []
    if since:
        try:
            seconds = parse_duration(since)
        except ValueError as exc:
            raise CliError(f"--since {since!r}: {exc}", 2) from None
        filters.append(f"_time:{max(1, int(seconds))}s")
    if task:
        filters.append(f"taskId:={_quoted(task)}")
    if role:
        filters.append(f"role:={_quoted(role)}")
    where = " ".join(filters) or "*"
    return f"{where} | sort by (_time desc) | limit {limit}"


def query_store(url: str | None, query: str, timeout: float = 10.0) -> list[dict]:
    """Run a LogsQL query; the lines as the store returns them, or a one-line CliError."""
    if not url:
        raise CliError(
            f"{LOGS_URL_ENV} is not set: `tasklab logs --all` reads the log store "
            "(`tasklab dev up --stage 5` starts one and prints its URL)",
            2,
        )
    try:
        base = check_logs_url(url)
    except InvalidLogsUrl as exc:
        raise CliError(str(exc), 2) from None
    body = urllib.parse.urlencode({"query": query}).encode()
    try:
        with urllib.request.urlopen(f"{base}{QUERY_PATH}", data=body, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip().splitlines()
        raise CliError(
            f"the log store at {base} refused the query (HTTP {exc.code}): "
            f"{detail[0] if detail else exc.reason}",
            1,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(
            f"cannot reach the log store at {base} ({getattr(exc, 'reason', exc)}); "
            "is it running? (`tasklab dev up --stage 5` starts one)",
            1,
        ) from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def as_logged(stored: dict) -> dict:
    """A stored line with the keys the role wrote: `ts` and `msg` again, the store's own
    `_stream` and `_stream_id` left out."""
    fields = {k: v for k, v in stored.items() if not k.startswith("_")}
    line = {"ts": millis(stored.get("_time", ""))}
    # In the order a role writes them (the store returns fields sorted by name).
    for key in ("level", "logger"):
        if key in fields:
            line[key] = fields.pop(key)
    line["msg"] = stored.get("_msg", "")
    line.update({k: fields.pop(k) for k in ("role", "process") if k in fields})
    line.update(fields)
    return line


def millis(stamp: str) -> str:
    """The store's RFC 3339 time (nanoseconds, trailing zeros cut) with exactly 3 decimals."""
    try:
        moment = datetime.fromisoformat(stamp)  # 3.11: "Z", and any number of decimals
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def readable(line: dict) -> str:
    """One line a person reads: time, process, level, message (and the traceback's last
    line, if there is one)."""
    text = f"{line.get('ts', '-')}  {line.get('process', '-'):<24} {line.get('level', '-'):<7} "
    text += str(line.get("msg", ""))
    exc = str(line.get("exc", "")).strip().splitlines()
    if exc:
        text += f"  ({exc[-1]})"
    return text


def store_lines(
    url: str | None, task: str | None, role: str | None, since: str | None, limit: int
) -> list[dict]:
    """The matching lines, oldest first, with the keys the roles wrote."""
    stored = query_store(url, build_query(task, role, since, limit))
    return [as_logged(s) for s in reversed(stored)]
