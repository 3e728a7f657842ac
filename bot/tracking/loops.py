"""What the background loops share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: in Python 3.11 it swallows a cancellation that arrives together
    with the event, and the loop waiting here would then outlive its ``stop()``.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class FailureStreak:
    """A background loop's failures in a row: how long to wait before trying again (doubling
    up to ``longest``, with jitter), and the log said once per streak, not at every retry."""

    def __init__(
        self, logger: logging.Logger, failing: str, recovered: str, *, longest: float = 60.0
    ) -> None:
        self._log = logger
        self._failing = failing
        self._recovered = recovered
        self._longest = longest
        self.failures = 0
        self.problem: str | None = None
        """What is failing, while it fails (for /healthz); None otherwise."""

    async def failed(self, exc: BaseException) -> None:
        """Note one failure and wait before the next try."""
        self.failures += 1
        if self.problem is None:
            self.problem = f"{self._failing} ({type(exc).__name__}: {exc})"
            self._log.error(
                "%s; trying again with a backoff", self.problem, exc_info=not _is_expected(exc)
            )
        delay = min(self._longest, 2.0 ** min(self.failures, 16) / 2)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def ended(self) -> None:
        """It works again (said once)."""
        if self.problem is not None:
            self._log.warning("%s", self._recovered)
        self.problem = None
        self.failures = 0


def _is_expected(exc: BaseException) -> bool:
    """Failures of the database itself (a full disk, a locked or missing file) need no
    traceback: the message says it all."""
    return isinstance(exc, sqlite3.Error | OSError)
