"""Status asked by members (commands and buttons): shared requests and a per-member rate.

Every member's ask goes through ``StatusLookups.status``. Concurrent and repeated asks for the
same training, API and key within ``fresh_for`` seconds share one request to the API; a member
who asks more than ``member_asks`` times in ``member_period`` seconds is refused with
``SlowDown`` until the oldest of those asks is old enough. 200 asks in a row from one member
cost the operator's key one request, not 200 (and cannot trip the API's spam filter for every
subscription).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from bot.sdapi.client import SdApiClient
from bot.sdapi.status import Api, TrainingStatus

Clock = Callable[[], float]
_Ask = tuple[str, str, Api]  # training_id, key_ref, api


class SlowDown(Exception):
    """The member asked too often; ``retry_after`` seconds until the next ask is taken."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many asks; retry in {retry_after:.0f}s")
        self.retry_after = retry_after


class StatusLookups:
    """The API client as members reach it: shared requests and a rate per member."""

    def __init__(
        self,
        client: SdApiClient,
        *,
        fresh_for: float = 5.0,
        member_asks: int = 10,
        member_period: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._fresh_for = fresh_for
        self._member_asks = member_asks
        self._member_period = member_period
        self._clock = clock
        self._recent: dict[_Ask, tuple[float, asyncio.Future[TrainingStatus]]] = {}
        self._asks: dict[int, deque[float]] = {}

    async def status(
        self,
        training_id: str,
        key_ref: str,
        key: str,
        api: Api,
        *,
        member_id: int,
        budget: float,
    ) -> TrainingStatus:
        """The training's status, shared with other asks of the last few seconds.

        Raises SlowDown for a member past their rate, or what the API client raises.
        """
        now = self._clock()
        self._count(member_id, now)
        ask = (training_id, key_ref, api)
        shared = self._recent.get(ask)
        if shared is not None and now - shared[0] < self._fresh_for:
            return await asyncio.shield(shared[1])
        future = asyncio.ensure_future(
            self._client.fine_tune_status(training_id, key, api=api, budget=budget)
        )
        self._remember(ask, now, future)
        return await asyncio.shield(future)

    def _remember(self, ask: _Ask, now: float, future: asyncio.Future[TrainingStatus]) -> None:
        if len(self._recent) > 1000:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < self._fresh_for}
        self._recent[ask] = (now, future)

        def forget_failures(done: asyncio.Future[TrainingStatus]) -> None:
            # A failed ask is shared by those waiting on it, not kept for the next ones.
            failed = done.cancelled() or done.exception() is not None
            if failed and self._recent.get(ask, (0.0, None))[1] is done:
                del self._recent[ask]

        future.add_done_callback(forget_failures)

    def _count(self, member_id: int, now: float) -> None:
        asks = self._asks.setdefault(member_id, deque())
        while asks and now - asks[0] >= self._member_period:
            asks.popleft()
        if len(asks) >= self._member_asks:
            raise SlowDown(self._member_period - (now - asks[0]))
        asks.append(now)
        if len(self._asks) > 10_000:
            self._asks = {
                member: times
                for member, times in self._asks.items()
                if times and now - times[-1] < self._member_period
            }
