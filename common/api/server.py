"""The `api` role of stage 4 (`tasklab run api --stage 4`): the REST API served by uvicorn.

1. bind `api_address` here, before serving: a taken port fails the start with one line, and
   the printed address is the one really bound (port 0 = a free one, for scripts and tests);
2. print `TASKLAB_API_URL=http://host:port` (what clients export) and serve;
3. on SIGTERM or Ctrl-C, uvicorn stops accepting, lets requests in flight finish for up to
   STOP_GRACE seconds (a follow stream is ended then, not waited for), and exits.
The providers are found in ZooKeeper by the first request that needs them.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from common.api.app import create_app
from common.api.metrics import observe_api
from common.config import Settings
from common.observability import get_logger
from common.rpc.server import split_address

log = get_logger("tasklab.api")

STOP_GRACE = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind(address: str) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, a keep-alive client's next request waits
    # out Nagle's algorithm against the peer's delayed ACK (about 40 ms on Linux) per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def api_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version raises the signal again once it has stopped gracefully, so the
        # process ends "killed by SIGTERM"; a tasklab role that stopped cleanly exits 0, as the
        # providers and agents do, which is what a supervisor reads as a clean stop.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_api(settings: Settings) -> None:
    # The app first: a production API without credentials refuses to start (ConfigError, one
    # line) before it takes a port, whatever the port's state.
    app = create_app(settings)
    observe_api(app, settings.redis_url)
    try:
        sock = bind(settings.api_address)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: cannot serve the REST API on {settings.api_address}: {exc}")
    config = uvicorn.Config(
        app,
        log_config=None,  # tasklab's logging (configure_logging), not uvicorn's own
        access_log=False,
        timeout_graceful_shutdown=STOP_GRACE,
        lifespan="on",
    )
    server = _Server(config)
    url = api_url(sock)
    log.info("REST API serving on %s", url)
    # Printed as well as logged: a script starting `tasklab run api` reads the address here.
    print(f"TASKLAB_API_URL={url}", flush=True)
    server.run(sockets=[sock])
    log.info("REST API on %s stopped", url)
