"""JSON log lines on stdout: structlog's own and the stdlib's (uvicorn) alike.

Accord's own events (the access log's line per request among them) are rendered by
structlog alone, with orjson, and written as bytes: the stdlib's LogRecord and formatter
cost more per request than a decision (docs/performance.md). Other libraries' stdlib
records are rendered by the same processors into the same shape of line.

Headers are never logged anywhere: they carry API keys.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import orjson
import structlog

SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _orjson(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


class LogOutput:
    """Where Accord's own lines go: this process's stdout (as it is when a line is written),
    and any copies asked for; the test suite's in-process servers keep theirs this way."""

    def __init__(self) -> None:
        self.copies: list[IO[bytes]] = []

    def write(self, line: bytes) -> None:
        sys.stdout.buffer.write(line)
        for copy in self.copies:
            copy.write(line)

    def flush(self) -> None:
        sys.stdout.flush()


LOG_OUTPUT = LogOutput()


class _NamedBytesLogger(structlog.BytesLogger):
    """structlog's bytes logger with the name it was asked for (the `logger` key)."""

    def __init__(self, name: str) -> None:
        super().__init__(LOG_OUTPUT)  # type: ignore[arg-type]  # write and flush suffice
        self.name = name


def _named_logger(*args: Any) -> _NamedBytesLogger:
    return _NamedBytesLogger(str(args[0]) if args else "")


def configure_logging(level: str) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # accord.access logs requests
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs every policy it loads
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_named_logger,
        cache_logger_on_first_use=True,
    )
