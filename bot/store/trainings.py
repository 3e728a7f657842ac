"""Trainings and their schedule: which are due, claiming them, and recording what polls saw.

The schedule lives here, in ``trainings.next_poll_at``: a claim reads the trainings due and, in
the same transaction, writes when each is due next, so the claim is also the lease (another
claim, in this process or another, skips it until then). A poll that sees nothing new writes
nothing more; one with news or an error records it with ``record``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.events import TERMINAL_SEQ, EventKind
from bot.store.db import Database, Dialect, Tx, rows_param
from bot.store.event_rows import EVENT_COLUMNS, event_row
from bot.store.models import Training, TrainingUpdate
from bot.store.outbox import Outbox

COLUMNS = (
    "training_id, key_ref, api, state, last_seq, eta_minutes, total_steps, terminal, "
    "failure_reason, next_poll_at, consecutive_errors, last_error, not_found_count, "
    "first_not_found_at, last_ok_at, failing_since, observation, last_polled_at, poll_reason"
)
_TERMINAL = COLUMNS.split(", ").index("terminal")
# A training is polled while it is not finished and some active subscription needs it.
FOLLOWED = (
    "t.terminal IS NULL AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.training_id = "
    "t.training_id AND s.key_ref = t.key_ref AND s.status = 'active')"
)
# A due training nobody follows any more is set aside this long (a subscription plans it anew),
# so claims do not walk past it again and again.
UNFOLLOWED_PARK_SECONDS = 86_400.0

Planner = Callable[[Training], tuple[float, str]]
"""The next poll of a training just claimed, if its answer changes nothing: (when, why)."""


def training(row: Sequence[Any]) -> Training:
    """A Training from the columns of ``COLUMNS``, in that order."""
    terminal = row[_TERMINAL]
    if terminal is None:
        return Training._make(row)
    return Training._make((*row[:_TERMINAL], EventKind(terminal), *row[_TERMINAL + 1 :]))


# The next poll time of a recorded poll, unless someone asked for a sooner poll since the claim
# planned it (the row no longer holds the planned time ``c2``): that request stands.
_NEXT_POLL = (
    "CASE WHEN j.c2 IS NOT NULL AND trainings.next_poll_at < j.c2 "
    "THEN trainings.next_poll_at ELSE {} END"
)


def _record_answer(sql: Dialect) -> str:
    """A poll the API answered: the row's new state; the error and "not found" counts start
    over. Parameters: last_ok_at, then the rows of ``_Rows.answers``."""
    rows = sql.json_rows(
        "text", "text", "real", "text", "int", "int", "int", "text", "text", "real", "real",
        "text", "text", "text", "real",
    )  # fmt: skip
    return (
        "UPDATE trainings SET state = j.c3, last_seq = j.c4, eta_minutes = j.c5, "
        "total_steps = COALESCE(j.c6, trainings.total_steps), terminal = j.c7, "
        "failure_reason = j.c8, finished_at = j.c9, "
        f"next_poll_at = {_NEXT_POLL.format('j.c10')}, api = j.c11, "
        "observation = COALESCE(j.c12, trainings.observation), poll_reason = j.c13, "
        "last_polled_at = COALESCE(j.c14, trainings.last_polled_at), "
        "consecutive_errors = 0, last_error = NULL, not_found_count = 0, "
        "first_not_found_at = NULL, failing_since = NULL, "
        "last_ok_at = CAST(? AS DOUBLE PRECISION) "
        f"FROM ({rows}) AS j "
        "WHERE trainings.training_id = j.c0 AND trainings.key_ref = j.c1"
    )


def _record_error(sql: Dialect) -> str:
    """A poll that failed: when to try again and why; the last good state stays.
    Parameters: the rows of ``_Rows.errors``."""
    rows = sql.json_rows(
        "text", "text", "real", "int", "text", "int", "real", "real", "text", "text", "real",
        "real", "text",
    )  # fmt: skip
    return (
        "UPDATE trainings SET consecutive_errors = j.c3, last_error = j.c4, "
        "not_found_count = j.c5, first_not_found_at = j.c6, failing_since = j.c7, "
        "terminal = j.c8, failure_reason = j.c9, finished_at = j.c10, "
        f"next_poll_at = {_NEXT_POLL.format('j.c11')}, poll_reason = j.c12 "
        f"FROM ({rows}) AS j "
        "WHERE trainings.training_id = j.c0 AND trainings.key_ref = j.c1"
    )


# Events as json_rows columns: training_id, key_ref, then EVENT_COLUMNS.
_EVENT_TYPES = ("text", "text", "int", "text", "int", "text", "int", "int", "text", "text",
                "int", "int", "real")  # fmt: skip


MAX_REFUSED = 8
"""Refusals ``record_apart`` isolates in one batch; past that the fault is not the data's (a
bug refusing every update must not cost a transaction each)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_apart`` did: deliveries created, and the updates refused with the reason."""

    created: int
    refused: tuple[tuple[TrainingUpdate, Exception], ...] = ()


class Trainings:
    """The ``trainings`` and ``events`` tables: the schedule, and what each poll saw."""

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self._db = db
        self._outbox = outbox
        sql = db.sql
        # Several instances claim side by side: rows another claim holds are skipped, not
        # waited for, and the next poll time written in the same transaction is the lease.
        self._claim = (
            f"SELECT {COLUMNS}, {FOLLOWED} AS followed FROM trainings t "
            "WHERE t.terminal IS NULL AND t.next_poll_at <= ? "
            f"ORDER BY t.next_poll_at, t.training_id LIMIT ?{sql.skip_locked}"
        )
        self._plan = (
            "UPDATE trainings SET next_poll_at = j.c2, poll_reason = j.c3, "
            "last_polled_at = COALESCE(j.c4, trainings.last_polled_at) "
            f"FROM ({sql.json_rows('text', 'text', 'real', 'text', 'real')}) AS j "
            "WHERE trainings.training_id = j.c0 AND trainings.key_ref = j.c1"
        )
        self._poll_now = (
            f"UPDATE trainings SET next_poll_at = {sql.greatest}(CAST(? AS DOUBLE PRECISION), "
            "COALESCE(last_polled_at, 0) + CAST(? AS DOUBLE PRECISION)), "
            "poll_reason = 'asked for' WHERE training_id = ? AND key_ref = ? "
            "AND next_poll_at > ?"
        )
        self._insert_missing = (
            "INSERT INTO trainings (training_id, key_ref, api, next_poll_at, created_at) "
            "SELECT c0, c1, c2, c3, CAST(? AS DOUBLE PRECISION) "
            f"FROM ({sql.json_rows('text', 'text', 'text', 'real')}) AS j"
        )
        self._unrecord = [
            f"DELETE FROM {table} WHERE seq = ? AND (training_id, key_ref) IN "
            f"(SELECT c0, c1 FROM ({sql.json_rows('text', 'text')}) AS j)"
            for table in ("deliveries", "events")
        ]
        self._insert_events = (
            f"INSERT INTO events (training_id, key_ref, {EVENT_COLUMNS}, observed_at) "
            f"SELECT j.*, CAST(? AS DOUBLE PRECISION) FROM ({sql.json_rows(*_EVENT_TYPES)}) AS j "
            "WHERE true ON CONFLICT DO NOTHING"
        )
        self._record_answer = _record_answer(sql)
        self._record_error = _record_error(sql)
        # Two instances recording one training (a lease that ran out mid-poll) take turns: the
        # second reads what the first wrote. Locked in one order, so two batches never deadlock.
        self._last_recorded = (
            "SELECT training_id, key_ref, last_seq, terminal FROM trainings "
            f"WHERE training_id IN (SELECT c0 FROM ({sql.json_rows('text')}) AS j) "
            f"ORDER BY training_id, key_ref{sql.lock_rows}"
        )

    async def get(self, training_id: str, key_ref: str) -> Training | None:
        """One training, or None."""
        rows = await self._db.fetch(
            f"SELECT {COLUMNS} FROM trainings WHERE training_id = ? AND key_ref = ?",
            (training_id, key_ref),
        )
        return training(rows[0]) if rows else None

    async def claim_due(
        self, now: float, limit: int, plan: Planner
    ) -> list[tuple[Training, float]]:
        """The followed trainings due at ``now`` (at most ``limit``, soonest first), each with
        its next poll time written (``plan(row)``) in the same transaction: until then no other
        claim takes it. Returns each row as it was before the claim, with that time."""
        async with self._db.transaction() as tx:
            rows = await tx.select_json(f"{COLUMNS}, followed", self._claim, (now, limit))
            claimed = [(t, plan(t)) for t in (training(r[:-1]) for r in rows if r[-1])]
            planned: list[tuple[str, str, float, str, float | None]] = [
                (t.training_id, t.key_ref, at, why, now) for t, (at, why) in claimed
            ]
            planned += [
                (r[0], r[1], now + UNFOLLOWED_PARK_SECONDS, "nobody follows it", None)
                for r in rows
                if not r[-1]
            ]
            if planned:
                await tx.execute(self._plan, (rows_param(planned),))
        return [(t, at) for t, (at, _) in claimed]

    async def next_due_at(self) -> float | None:
        """When the soonest unfinished training is due (None: none is)."""
        rows = await self._db.fetch(
            "SELECT MIN(next_poll_at) FROM trainings WHERE terminal IS NULL"
        )
        value = rows[0][0]
        return None if value is None else float(value)

    async def poll_now(self, training_id: str, now: float, min_gap: float = 0.0) -> list[str]:
        """Make this training due now where someone follows it, or as soon as ``min_gap`` after
        its last poll allows; returns the key_refs of the followed rows (one per key)."""
        async with self._db.transaction() as tx:
            key_refs = [
                str(r[0])
                for r in await tx.fetch(
                    f"SELECT t.key_ref FROM trainings t WHERE t.training_id = ? AND {FOLLOWED}",
                    (training_id,),
                )
            ]
            await tx.executemany(
                self._poll_now,
                [(now, min_gap, training_id, key_ref, now) for key_ref in key_refs],
            )
        return key_refs

    async def finished_observations(self, limit: int) -> list[str]:
        """The poll policy's observations of the last ``limit`` finished trainings (JSON), for
        learning how long each stage takes."""
        rows = await self._db.fetch(
            "SELECT observation FROM trainings WHERE observation IS NOT NULL "
            "AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (limit,),
        )
        return [str(r[0]) for r in rows]

    async def schedule(self) -> list[tuple[str, str, float, str | None]]:
        """Every followed training's next poll: (training_id, key_ref, when, why)."""
        rows = await self._db.fetch(
            f"SELECT t.training_id, t.key_ref, t.next_poll_at, t.poll_reason FROM trainings t "
            f"WHERE {FOLLOWED} ORDER BY t.next_poll_at"
        )
        return [(str(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    async def count_followed(self) -> int:
        """Trainings currently polled."""
        rows = await self._db.fetch(f"SELECT COUNT(*) FROM trainings t WHERE {FOLLOWED}")
        return int(rows[0][0])

    async def record(self, updates: Sequence[TrainingUpdate], now: float) -> int:
        """Record polls: training rows, new events and their deliveries in ONE transaction.

        A handful of statements whatever the number of updates (each takes all its rows as one
        JSON value). Events at or below a row's ``last_seq`` are already recorded and skipped,
        whoever polled meanwhile. Returns the number of deliveries created.
        """
        created = 0
        async with self._db.transaction() as tx:
            for run in _distinct_runs(updates):
                created += await self._record_run(tx, run, now)
        return created

    async def record_apart(self, updates: Sequence[TrainingUpdate], now: float) -> Recorded:
        """``record``, but updates whose values the database refuses (``refused_data``) are
        returned, not rolled back with the rest: the batch is halved until each stands alone
        (one bad update costs two transactions per halving). Other errors, and refusals past
        ``MAX_REFUSED``, are raised (what was recorded before stays)."""
        refused: list[tuple[TrainingUpdate, Exception]] = []
        created = await self._record_halves(updates, now, refused)
        return Recorded(created, tuple(refused))

    async def _record_halves(
        self,
        updates: Sequence[TrainingUpdate],
        now: float,
        refused: list[tuple[TrainingUpdate, Exception]],
    ) -> int:
        try:
            return await self.record(updates, now)
        except Exception as exc:
            if not self._db.refused_data(exc) or len(refused) >= MAX_REFUSED:
                raise
            if len(updates) == 1:
                refused.append((updates[0], exc))
                return 0
        half = len(updates) // 2
        first = await self._record_halves(updates[:half], now, refused)
        return first + await self._record_halves(updates[half:], now, refused)

    async def _record_run(self, tx: Tx, updates: Sequence[TrainingUpdate], now: float) -> int:
        """Record updates of distinct trainings (their statements do not interact)."""
        known = await self._known(tx, updates)
        missing = [u for u in updates if (u.training_id, u.key_ref) not in known]
        if missing:
            await tx.execute(
                self._insert_missing,
                (
                    now,
                    rows_param(
                        [(u.training_id, u.key_ref, u.api, u.next_poll_at) for u in missing]
                    ),
                ),
            )
        rows = _Rows.of(updates, known, now)
        if rows.revived:
            # The terminal slot must be free for the real outcome (and its deliveries).
            for statement in self._unrecord:
                await tx.execute(statement, (TERMINAL_SEQ, rows_param(rows.revived)))
        if rows.events:
            await tx.execute(self._insert_events, (now, rows_param(rows.events)))
        if rows.answers:
            await tx.execute(self._record_answer, (now, rows_param(rows.answers)))
        if rows.errors:
            await tx.execute(self._record_error, (rows_param(rows.errors),))
        return await self._outbox.enqueue(tx, rows.news, now)

    async def _known(
        self, tx: Tx, updates: Sequence[TrainingUpdate]
    ) -> dict[tuple[str, str], tuple[int, str | None]]:
        """``(training_id, key_ref) -> (last_seq, terminal)`` of the rows these updates touch
        (locked until the transaction ends where several instances share the database)."""
        rows = await tx.select_json(
            "training_id, key_ref, last_seq, terminal",
            self._last_recorded,
            (rows_param([(t,) for t in sorted({u.training_id for u in updates})]),),
        )
        return {(r[0], r[1]): (int(r[2]), r[3]) for r in rows}


@dataclass
class _Rows:
    """The rows one run of updates writes, each list one JSON value of one statement."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    answers: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[tuple[Any, ...]] = field(default_factory=list)
    news: list[tuple[str, str, int]] = field(default_factory=list)  # the first new seq
    revived: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        updates: Sequence[TrainingUpdate],
        known: dict[tuple[str, str], tuple[int, str | None]],
        now: float,
    ) -> _Rows:
        rows = cls()
        for update in updates:
            ref = (update.training_id, update.key_ref)
            last_seq, terminal = known.get(ref, (-1, None))
            if terminal == EventKind.UNKNOWN.value and update.answered:
                # Declared unknown after repeated "not found", yet the API answers for it again
                # (created late, or an API hiccup): follow it anew.
                rows.revived.append(ref)
            elif terminal is not None:
                continue  # nothing is recorded after the terminal event
            rows.add(update, last_seq, now)
        return rows

    def add(self, update: TrainingUpdate, last_seq: int, now: float) -> None:
        ref = (update.training_id, update.key_ref)
        events = [e for e in update.events if e.seq > last_seq]
        end = next((e for e in events if e.kind.terminal), None)
        if events:
            self.events.extend((*ref, *event_row(e)) for e in events)
            last_seq = max(last_seq, *(e.seq for e in events if not e.kind.terminal), -1)
            self.news.append((*ref, min(e.seq for e in events)))
        ending = (
            end.kind.value if end else None,
            end.detail if end else None,
            now if end else None,
        )
        if update.answered:
            self.answers.append(
                (
                    *ref,
                    update.planned_at,
                    update.state,
                    last_seq,
                    update.eta_minutes,
                    update.total_steps,
                    *ending,
                    update.next_poll_at,
                    update.api,
                    update.observation,
                    update.poll_reason,
                    update.polled_at,
                )
            )
        else:
            self.errors.append(
                (
                    *ref,
                    update.planned_at,
                    update.consecutive_errors,
                    update.last_error,
                    update.not_found_count,
                    update.first_not_found_at,
                    update.failing_since,
                    *ending,
                    update.next_poll_at,
                    update.poll_reason,
                )
            )


def _distinct_runs(updates: Sequence[TrainingUpdate]) -> list[list[TrainingUpdate]]:
    """Consecutive runs of updates with distinct trainings: a training recorded twice in one
    batch is recorded in order, one run after another."""
    runs: list[list[TrainingUpdate]] = []
    current: list[TrainingUpdate] = []
    seen: set[tuple[str, str]] = set()
    for update in updates:
        ref = (update.training_id, update.key_ref)
        if ref in seen:
            runs.append(current)
            current, seen = [], set()
        seen.add(ref)
        current.append(update)
    if current:
        runs.append(current)
    return runs
