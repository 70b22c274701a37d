"""The image's HEALTHCHECK, one command for every role: `python -m common.cli.healthcheck`.

One image runs every role, and a Dockerfile's HEALTHCHECK cannot know which one. With an
operator port (`metrics_address`, TASKLAB_METRICS_ADDRESS), the process itself answers its
`/health`: the strongest liveness there is, and it works for an agent, a scheduler, the API
alike. Without one, `tasklab health` is the fallback every role shares: its Redis answers.
Liveness only, never `/ready`: a container restarted because Redis is down would not bring
Redis back (common/observability/health.py explains the split).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def check_operator_port(address: str) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    # A role serving on every interface is asked on its loopback, from inside its container.
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - http only
            return response.status == 200, f"{url}: {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


def main(argv: list[str] | None = None) -> int:
    from common.cli.errors import one_line
    from common.config import ConfigError, load_settings

    try:
        address = load_settings().metrics_address
    except ConfigError as exc:
        print(f"unhealthy: {one_line(str(exc))}", file=sys.stderr)
        return 1
    if address:
        ok, detail = check_operator_port(address)
        print(("ok: " if ok else "unhealthy: ") + detail, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    from common.cli.main import app

    try:
        # Not standalone: `fail`'s exit code comes back as the return value (its message is
        # already printed), and an error that escapes it as an exception.
        code = app(["health", *(argv or [])], standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - a healthcheck answers, it never raises
        print(f"unhealthy: {one_line(str(exc))}", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
