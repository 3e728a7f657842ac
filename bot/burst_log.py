"""Logs that cannot flood: a burst of like events costs a line when it starts and one when it
ends (``BurstLog``), and aiohttp's request handler logs through ``ServerLog`` (a malformed
request is one warning line without a traceback, a dropped connection a debug line, secrets
masked)."""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

# A burst of like events ends after this long without one; a long one is summed up this often.
BURST_QUIET_SECONDS = 10.0
BURST_REPORT_SECONDS = 300.0
# Malformed request lines are the client's text: one line, and not a long one.
MAX_LOGGED_CHARS = 300


@dataclass
class _Run:
    label: str
    level: int
    last: float
    reported: float
    more: int = 0  # events since the last line
    handle: asyncio.TimerHandle | None = None


class BurstLog:
    """Logs the first event of a run of like events in full, then counts: one line when the run
    has been quiet for ``quiet`` seconds and one every ``report_every`` seconds while it lasts.

    A flood of failures costs a few lines, not a line (or a traceback) per event."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        quiet: float = BURST_QUIET_SECONDS,
        report_every: float = BURST_REPORT_SECONDS,
    ) -> None:
        self._logger = logger
        self._quiet = quiet
        self._report_every = report_every
        self._runs: dict[object, _Run] = {}

    def starts(self, key: object, label: str, level: int) -> bool:
        """Count one event of ``key``; True when it starts a run (the caller logs it in full)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return True  # no loop to time a run with (a thread, or shutdown): let it through
        now = loop.time()
        run = self._runs.get(key)
        if run is not None:
            run.more += 1
            run.last = now
            if now - run.reported >= self._report_every:
                self._sum_up(run, now, "still going")
            return False
        run = _Run(label, level, last=now, reported=now)
        run.handle = loop.call_at(now + self._quiet, self._check, key)
        self._runs[key] = run
        return True

    def note(self, key: object, level: int, message: str) -> None:
        """Log ``message`` if it starts a run of ``key``; count it otherwise."""
        if self.starts(key, message, level):
            self._logger.log(level, "%s", message)

    def close(self) -> None:
        """Sum up the runs still going and stop their timers."""
        loop_time = _loop_time()
        for run in self._runs.values():
            if run.handle is not None:
                run.handle.cancel()
            if run.more and loop_time is not None:
                self._sum_up(run, loop_time, "stopped")
        self._runs.clear()

    def _check(self, key: object) -> None:
        run = self._runs.get(key)
        if run is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - run.last < self._quiet:
            run.handle = loop.call_at(run.last + self._quiet, self._check, key)
            return
        del self._runs[key]
        if run.more:
            self._sum_up(run, now, "now quiet")

    def _sum_up(self, run: _Run, now: float, state: str) -> None:
        self._logger.log(
            run.level,
            "%s (%d more like it in %.0f s, %s)",
            run.label,
            run.more,
            now - run.reported,
            state,
        )
        run.more = 0
        run.reported = now


def _loop_time() -> float | None:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return None


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What aiohttp's request handler logs through (its ``logger`` argument).

    aiohttp logs every malformed request and every failed handler at ERROR with a traceback, one
    per connection: a flood of junk requests would be a flood of tracebacks. Here a malformed
    request is the client's doing (one WARNING line, no traceback), a connection the client
    dropped (or that the guard closed) is nothing to fix (DEBUG), and either kind logs once per
    burst. ``mask`` takes secrets out of what is logged: a request line can carry the webhook
    URL."""

    def __init__(
        self, logger: logging.Logger, bursts: BurstLog, mask: Callable[[str], str]
    ) -> None:
        super().__init__(logger, {})
        self._bursts = bursts
        self._mask = mask

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Every method of the adapter (debug, warning, exception...) ends here."""
        exc = _exception_of(kwargs.get("exc_info"))
        if exc is None or level < logging.WARNING:
            if self.isEnabledFor(level):
                self.logger.log(level, "%s", self._text(msg, args), **_without_exc(kwargs))
            return
        text = self._text(msg, args)
        if isinstance(exc, ConnectionError):
            self.logger.debug("%s: %r", text, exc)
            return
        if isinstance(exc, HttpProcessingError):
            # Masked before it is cut: a cut could leave half a secret past the mask's reach.
            line = self._mask(" ".join(f"{text}: {type(exc).__name__}: {exc}".split()))
            line = line[:MAX_LOGGED_CHARS]
            if self._bursts.starts(("bad request", type(exc).__name__), line, logging.WARNING):
                self.logger.warning("%s", line)
            return
        # A failure of our own handlers: keep the traceback, once per burst.
        label = self._mask(f"{text}: {exc!r}")
        if self._bursts.starts((str(msg), type(exc).__name__), label, level):
            trace = "".join(traceback.format_exception(exc))
            self.logger.log(level, "%s\n%s", text, self._mask(trace.rstrip()))

    def _text(self, msg: object, args: tuple[object, ...]) -> str:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # as logging itself would, never raise into aiohttp
            text = f"{msg} {args!r}"
        return self._mask(text)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Nothing to add: the adapter exists for ``log``."""
        return msg, kwargs


def _exception_of(exc_info: object) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return None


def _without_exc(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in ("stack_info", "stacklevel", "extra")}
