"""`accord serve` and `accord openapi`: the HTTP service and its schema."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from types import FrameType
from typing import Any, NoReturn

from app.audit.signing import configured_signer
from app.config import get_settings
from app.runtime.logs import configure_logging
from app.web.metrics_port import MetricsPort


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address (ACCORD_HOST)")
    serve.add_argument("--port", type=int, help="port (ACCORD_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (ACCORD_WORKERS)")
    serve.set_defaults(run=_serve)
    commands.add_parser("openapi", help="print the served OpenAPI schema as YAML").set_defaults(
        run=_openapi
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    # Each worker's create_app refuses to start without the audit signing key; say so
    # once, plainly, before binding.
    configured_signer(settings.audit_signing_key_file, unsigned=settings.audit_unsigned)
    workers = args.workers or settings.workers
    port = args.port or settings.port
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers are separate processes: their metrics are summed through files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="accord-metrics-")
    metrics_port = None
    if settings.metrics_port is not None:
        # Served by this process for every worker (app/web/metrics_port.py), bound before
        # the service's port so that a port taken stops the start here.
        configure_logging(settings.log_level)
        try:
            if settings.metrics_port == port:
                raise OSError("it is the service's port (ACCORD_PORT)")
            metrics_port = MetricsPort(settings, settings.metrics_port)
        except OSError as exc:
            print(
                f"error: ACCORD_METRICS_PORT {settings.metrics_port} cannot be bound on "
                f"{settings.metrics_host}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests (at most
    # ACCORD_SHUTDOWN_GRACE_SECONDS), runs the lifespan shutdown (the audit writer
    # flushes), then raises SIGTERM again to the handler it found: exit 0 there,
    # so a clean shutdown is not reported as death by signal (143).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host or settings.host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )
    finally:
        if metrics_port is not None:
            metrics_port.stop()
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def _openapi(_: argparse.Namespace) -> int:
    import yaml

    from app.main import create_app

    schema = json.loads(json.dumps(create_app().openapi()))
    print(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), end="")
    return 0
