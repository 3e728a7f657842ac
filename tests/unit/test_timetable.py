"""The tracker's in-memory schedule: against a plain model, whatever the order of operations."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.tracking.timetable import Timetable


def test_pops_the_soonest_first_and_equal_times_in_the_order_planned() -> None:
    table: Timetable[str] = Timetable()
    table.plan_many([("c", 5.0), ("a", 3.0), ("b", 5.0)])
    table.plan("d", 5.0)
    table.plan("e", 1.0)
    assert len(table) == 5
    assert table.next_at() == 1.0
    assert table.pop_due(4.0, 10) == ["e", "a"]
    assert table.pop_due(5.0, 2) == ["c", "b"]  # the limit holds inside one time
    assert table.pop_due(5.0, 10) == ["d"]
    assert len(table) == 0
    assert table.next_at() is None


def test_a_key_planned_again_or_discarded_is_not_popped_at_its_old_time() -> None:
    table: Timetable[str] = Timetable()
    table.plan_many([("a", 1.0), ("b", 1.0), ("c", 1.0)])
    table.plan("a", 9.0)  # moved later
    table.discard("b")
    assert "b" not in table
    assert table.get("a") == 9.0
    assert table.pop_due(5.0, 10) == ["c"]
    table.plan("b", 1.0)  # back, at a time whose first entry is stale
    assert table.pop_due(5.0, 10) == ["b"]
    assert table.pop_due(math.inf, 10) == ["a"]


KEYS = st.sampled_from("abcdefgh")
TIMES = st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0])  # few, so that times are shared
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("plan"), KEYS, TIMES),
        st.tuples(st.just("many"), st.lists(st.tuples(KEYS, TIMES), max_size=6)),
        st.tuples(st.just("discard"), KEYS),
        st.tuples(st.just("pop"), TIMES, st.integers(0, 4)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_agrees_with_a_plain_model(operations: list[tuple]) -> None:
    table: Timetable[str] = Timetable()
    model: dict[str, float] = {}
    for operation in operations:
        if operation[0] == "plan":
            _, key, at = operation
            table.plan(key, at)
            model[key] = at
        elif operation[0] == "many":
            table.plan_many(operation[1])
            model.update(operation[1])
        elif operation[0] == "discard":
            table.discard(operation[1])
            model.pop(operation[1], None)
        else:
            _, now, limit = operation
            popped = table.pop_due(now, limit)
            due = sorted(at for at in model.values() if at <= now)
            # As many as are due, up to the limit; each once; the soonest first.
            assert len(popped) == min(limit, len(due))
            assert len(set(popped)) == len(popped)
            assert [model[key] for key in popped] == due[: len(popped)]
            for key in popped:
                del model[key]
        assert len(table) == len(model)
        assert all(table.get(key) == at for key, at in model.items())
        if model:  # (with nothing planned, a stale entry may still give a time)
            next_at = table.next_at()
            assert next_at is not None
            assert next_at <= min(model.values())
    # Whatever is left comes out once, in time order.
    rest = table.pop_due(math.inf, len(model) + 1)
    assert sorted(rest) == sorted(model)
    assert [model[key] for key in rest] == sorted(model.values())
    assert table.next_at() is None
