"""When each followed training is next due: the tracker's schedule, kept in memory."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, ItemsView, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Timetable(Generic[K]):
    """Keys with a due time each; ``pop_due`` hands out the due ones, soonest first, and keys
    due at the same moment in the order they were planned.

    Thousands of keys are planned and popped per second, so it is built for that: a heap of
    distinct due times (floats: comparing ``(time, key)`` tuples cost about 12,000 instructions
    per poll, an eighth of the tracker's own work), the key planned first at each time, and the
    keys planned after it at the same time (rare, except for rows written alike), in order. A
    time is in the heap once while it holds keys. Planning a key again or discarding it leaves
    its old entry in place, stale, and ``pop_due`` skips it.
    """

    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._times: list[float] = []
        self._first: dict[float, K] = {}
        self._more: dict[float, deque[K]] = {}

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def get(self, key: K) -> float | None:
        """When ``key`` is due; None when it is not planned."""
        return self._due.get(key)

    def items(self) -> ItemsView[K, float]:
        """(key, due time) of every planned key."""
        return self._due.items()

    def plan(self, key: K, at: float) -> None:
        """Make ``key`` due at ``at`` (instead of any time planned before)."""
        self._due[key] = at
        if self._place(key, at):
            heapq.heappush(self._times, at)

    def plan_many(self, entries: Iterable[tuple[K, float]]) -> None:
        """``plan`` each (key, at), in order; one heapify for thousands costs less than a push
        each."""
        times = []
        for key, at in entries:
            self._due[key] = at
            if self._place(key, at):
                times.append(at)
        self._times.extend(times)
        heapq.heapify(self._times)

    def discard(self, key: K) -> None:
        """No longer planned (if it was)."""
        self._due.pop(key, None)

    def next_at(self) -> float | None:
        """No later than the soonest due time (a stale entry can make it earlier); None when
        nothing is planned."""
        return self._times[0] if self._times else None

    def pop_due(self, now: float, limit: int) -> list[K]:
        """At most ``limit`` keys due at or before ``now``, soonest first; they are no longer
        planned."""
        times, first, more, due = self._times, self._first, self._more, self._due
        popped: list[K] = []
        while len(popped) < limit and times and times[0] <= now:
            at = times[0]
            key = first.pop(at, None)
            if key is None:  # the first one is gone: the others, in order
                crowd = more[at]
                key = crowd.popleft()
                if not crowd:
                    del more[at]
                    heapq.heappop(times)
            elif at not in more:
                heapq.heappop(times)
            if due.get(key) != at:
                continue  # stale: planned again since, or discarded
            del due[key]
            popped.append(key)
        return popped

    def _place(self, key: K, at: float) -> bool:
        """Put a key at its time, after those already there; True when the time is new (the
        heap needs it)."""
        crowd = self._more.get(at)
        if crowd is not None:
            crowd.append(key)
        elif at in self._first:
            self._more[at] = deque((key,))
        else:
            self._first[at] = key
            return True
        return False
