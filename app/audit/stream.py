"""Following the audit trail as it grows (`GET /v1/audit/stream`): how often a stream looks
for new rows, what it sends when there are none, and how it learns that the server stops.

A stream stays open: uvicorn, on SIGTERM, waits for open responses to finish (at most
ACCORD_SHUTDOWN_GRACE_SECONDS) before it cancels them and runs the lifespan's shutdown, and
tells an application nothing meanwhile. So a stream notes the signal itself: the first
stream on a server puts a handler in front of the server's own (which it then calls), and
every stream ends cleanly, its chunked body closed, within POLL_SECONDS of the signal.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

POLL_SECONDS = 0.5  # how often a stream that has caught up asks the database for new rows
KEEPALIVE_SECONDS = 15.0  # a stream silent this long sends KEEPALIVE
# An empty line: no NDJSON value, so a consumer skips it as it skips any blank line. It
# lets a client's or a proxy's read timeout tell a quiet trail from a dead connection.
KEEPALIVE = b"\n"

_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stopping = threading.Event()


class _NoteShutdown:
    """A signal handler that notes that the server is stopping, then runs the one it
    replaced (uvicorn's, which starts the shutdown)."""

    def __init__(self, replaced: Any) -> None:
        self.replaced = replaced

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        self.replaced(signum, frame)


def watch_shutdown() -> None:
    """Note SIGINT and SIGTERM from now on, in front of the handlers the server installed.

    Signal handlers belong to the main thread, where uvicorn runs its event loop; elsewhere
    (an app served from another thread, as the in-process tests do) nothing is installed
    and a stream ends when the server cancels it. Only a Python handler is wrapped: the
    default action (death, KeyboardInterrupt) needs no notice."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SHUTDOWN_SIGNALS:
        current = signal.getsignal(signum)
        if callable(current) and not isinstance(current, _NoteShutdown):
            _stopping.clear()  # a server (re)installed its handlers: it is not stopping
            signal.signal(signum, _NoteShutdown(current))


def shutting_down() -> bool:
    """Whether the server has been told to stop since a stream began watching."""
    return _stopping.is_set()
