"""How a replica keeps its state current: refresh in a thread, on an interval, forever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


async def follow(refresh: Callable[[], None], *, interval: float, failure: str) -> None:
    """Run `refresh` off the event loop every `interval` seconds until cancelled.

    A failed refresh is logged as `failure` and tried again next time; what it
    was refreshing keeps its previous state meanwhile.
    """
    while True:
        try:
            await asyncio.to_thread(refresh)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(failure, error=str(exc).splitlines()[0])
        await asyncio.sleep(interval)
