"""Background tasks of a worker's event loop (the catalog's and the plain folder's watchers)."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended; nothing to do for None (never started)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
