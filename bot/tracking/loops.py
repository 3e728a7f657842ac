"""What the background loops share."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: in Python 3.11 it swallows a cancellation that arrives together
    with the event, and the loop waiting here would then outlive its ``stop()``.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
