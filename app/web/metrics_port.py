"""The metrics port: GET /metrics without a key, on ACCORD_METRICS_HOST:ACCORD_METRICS_PORT.

One listener serves every worker. `accord serve` starts it in a thread of its own process
before uvicorn starts the workers. With several workers that process is uvicorn's supervisor:
it answers no request, outlives any worker it restarts, and reads every worker's metrics from
the multiprocess directory (PROMETHEUS_MULTIPROC_DIR), summed, as the service's own /metrics
does. With one worker it is the worker's own process, whose registry it reads. Either way the
port is bound once, and a scrape never waits on a worker's event loop. (A worker's lifespan
could not do it: workers have no stable rank, all would race to bind the port, and the one
that won would take it away when it died.)

The answer is the service's /metrics answer (`render_metrics`), with the break-glass gauges
counted in the database through an engine of its own. There is no key: bind the port where
only Prometheus reaches it (the default, 127.0.0.1, is this host only).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIEnvironment

from app.config import Settings
from app.runtime.clock import SystemClock
from app.store.database import make_engine
from app.web.health import render_metrics


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold the process at exit

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # IPv4 or IPv6, as the host resolves
        super().__init__(address, _Quiet)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


class MetricsPort:
    """GET /metrics on its own port, served by a thread until `stop`. Binding raises
    OSError (the port is taken, the address is not this host's)."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        family, _, _, _, address = socket.getaddrinfo(
            settings.metrics_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.server = _Server((str(address[0]), port), family)
        self.server.set_app(self._answer)
        self.engine = make_engine(settings.database_url)
        self.clock = SystemClock()
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="accord-metrics-port", daemon=True
        )
        self.thread.start()

    def _answer(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"only GET /metrics is served here\n"]
        if environ.get("REQUEST_METHOD") != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b""]
        body, content_type = render_metrics(self.engine, self.settings, self.clock)
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [body]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.engine.dispose()
