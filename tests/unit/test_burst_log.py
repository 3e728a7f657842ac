"""BurstLog: the first of a run of like events in full, then a count when the run ends."""

from __future__ import annotations

import logging

import pytest

from bot.burst_log import BurstLog
from tests.support.harness import wait_until


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.burst"]


async def test_a_run_costs_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    bursts = BurstLog(logging.getLogger("test.burst"), quiet=0.05)
    for _ in range(100):
        bursts.note("flood", logging.WARNING, "the port is flooded")
    bursts.note("other", logging.INFO, "something else")
    assert lines(caplog) == ["the port is flooded", "something else"]
    await wait_until(lambda: len(lines(caplog)) == 3, 10, "the end of the run")
    assert lines(caplog)[2].startswith("the port is flooded (99 more like it in ")
    assert lines(caplog)[2].endswith(", now quiet)")
    # After the run, the next event starts a new one, in full.
    bursts.note("flood", logging.WARNING, "the port is flooded")
    assert lines(caplog)[3] == "the port is flooded"
    bursts.close()
    assert len(lines(caplog)) == 4  # nothing more to sum up: no event after the first


async def test_a_long_run_is_summed_up_as_it_goes(caplog: pytest.LogCaptureFixture) -> None:
    bursts = BurstLog(logging.getLogger("test.burst"), quiet=60, report_every=0.0)
    bursts.note("flood", logging.WARNING, "flooded")
    bursts.note("flood", logging.WARNING, "flooded")
    bursts.note("flood", logging.WARNING, "flooded")
    assert lines(caplog)[0] == "flooded"
    assert all("1 more like it in" in line and "still going" in line for line in lines(caplog)[1:])
    assert len(lines(caplog)) == 3
    bursts.close()
    assert len(lines(caplog)) == 3


async def test_close_sums_up_what_is_still_counting(caplog: pytest.LogCaptureFixture) -> None:
    bursts = BurstLog(logging.getLogger("test.burst"), quiet=60)
    for _ in range(3):
        bursts.note("flood", logging.WARNING, "flooded")
    bursts.close()
    assert lines(caplog)[1].startswith("flooded (2 more like it in ")
    assert lines(caplog)[1].endswith(", stopped)")
