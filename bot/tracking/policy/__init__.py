"""When to poll a training next: a pure policy (issue 18).

The status of a training says when its next change is likely: each step line carries an ETA, the
trainer stamps its time elapsed, and past runs of the same kind show how long each stage lasts.
``plan_next_poll`` uses that to poll densely (every ``min_gap``) around the moment the current
stage is expected to end and sparsely (up to ``max_gap``) while nothing can change; when the
expected end passes with no change it stays dense for a while, then backs off towards
``max_gap``; a stage nothing was learned of yet (the first runs of a kind) is polled every
``min_gap``. Every gap, jitter included, lies in ``[min_gap, max_gap]``, and an unfinished
training always gets a finite next poll, whatever its ETA or the clock say.

Everything here is pure: the clock (``now``) and the random source are parameters; nothing reads
a file, the network or the database. The tracker keeps one ``Observation`` per training, made
and updated by ``observe`` after each answer (it returns the same object when nothing changed,
so a quiet poll has nothing to write), plans with ``plan_next_poll``, and learns from finished
runs with ``learn_stage_lengths``.

Times are seconds on the caller's clock (Unix time in the bot); lengths are seconds.
"""

from bot.tracking.policy.learn import Learned, StageStats, learn_stage_lengths
from bot.tracking.policy.model import (
    DEFAULT_TUNING,
    Bounds,
    Clamp,
    Observation,
    PollPolicy,
    Reason,
    RunRecord,
    Sighting,
    TrainingKind,
    Tuning,
    infer_kind,
    stage_key,
)
from bot.tracking.policy.plan import (
    Expectation,
    PollPlan,
    expect_stage_end,
    observe,
    plan_next_poll,
)

__all__ = [
    "DEFAULT_TUNING",
    "Bounds",
    "Clamp",
    "Expectation",
    "Learned",
    "Observation",
    "PollPlan",
    "PollPolicy",
    "Reason",
    "RunRecord",
    "Sighting",
    "StageStats",
    "TrainingKind",
    "Tuning",
    "expect_stage_end",
    "infer_kind",
    "learn_stage_lengths",
    "observe",
    "plan_next_poll",
    "stage_key",
]
