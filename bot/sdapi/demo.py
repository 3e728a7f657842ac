"""``python -m bot simulate``: the simulator with one demo training of each kind.

Each demo training waits for someone to follow it: its clock starts at the first status request
about it, then it moves one stage every ``advance_every`` seconds (minutes by default, so a
newcomer has time to subscribe and watch; ``--fast`` for tests and the impatient).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from bot.sdapi.timelines import TERMINAL_STAGE

log = logging.getLogger(__name__)

DEFAULT_ADVANCE_EVERY = 120.0
FAST_ADVANCE_EVERY = 3.0
DEMO_V6_ID = "6f1d2c3b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"


@dataclass(frozen=True, slots=True)
class DemoTraining:
    """One demo training: its id, what it shows, how it is scripted."""

    training_id: str
    shows: str
    options: dict[str, Any] = field(default_factory=dict)


DEMO_TRAININGS: tuple[DemoTraining, ...] = (
    DemoTraining(
        "DemoReady01", "ready already (the documentation's wording)", {"stage": TERMINAL_STAGE}
    ),
    DemoTraining("DemoRun0001", "Dreambooth, in the documentation's wording"),
    DemoTraining(
        "DemoDream01",
        "Dreambooth, in the trainer's own wording (Step:3 twice, Time Elapsed)",
        {"timeline": "dreambooth", "dialect": "slash_n"},
    ),
    DemoTraining(
        "DemoLora001",
        "LoRA, in the trainer's wording (no compressing step)",
        {"timeline": "lora", "dialect": "slash_n"},
    ),
    DemoTraining(
        DEMO_V6_ID,
        "a v6 trainer run: started, completed (preparing the model), ready",
        {"timeline": "v6"},
    ),
    DemoTraining(
        "DemoFail001",
        "Dreambooth that fails while training (CUDA out of memory)",
        {"timeline": "dreambooth", "dialect": "slash_n", "fail_at": 2},
    ),
)


def demo_simulator(advance_every: float) -> Simulator:
    """A simulator holding the demo trainings, each waiting for its first status request."""
    sim = Simulator(advance_every=advance_every, clock_from="first_request")
    for demo in DEMO_TRAININGS:
        sim.add_training(demo.training_id, **demo.options)
    return sim


def run_demo(
    host: str,
    port: int,
    advance_every: float = DEFAULT_ADVANCE_EVERY,
    announce: Callable[[str, str], None] | None = None,
) -> None:
    """Serve the demo trainings until interrupted (blocking); once serving, ``announce`` gets
    the v3 and v6 base URLs (the CLI prints what to try with them)."""
    asyncio.run(_serve_demo(host, port, advance_every, announce))


async def _serve_demo(
    host: str, port: int, advance_every: float, announce: Callable[[str, str], None] | None
) -> None:
    sim = demo_simulator(advance_every)
    base_url = await sim.start(host, port)
    assert sim.v6_base_url is not None  # noqa: S101 -- set by start()
    log.info("simulated Stable Diffusion API at %s (key %s)", base_url, DEFAULT_KEY)
    if announce is not None:
        announce(base_url, sim.v6_base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
