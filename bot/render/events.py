"""The tracker's messages: one per step, and the final message."""

from __future__ import annotations

import discord

from bot.events import Event, EventKind
from bot.render.status import _add_model_fields, _reason_text
from bot.render.text import (
    COLOUR_FAILED,
    COLOUR_READY,
    COLOUR_RUNNING,
    COLOUR_UNKNOWN,
    DESCRIPTION_LIMIT,
    TITLE_LIMIT,
    V6_STEP_WORDS,
    _code,
    _line,
    duration_text,
    eta_text,
    inert,
    progress_bar,
    truncate,
)
from bot.sdapi.status import ModelInfo, parse_step_line
from bot.sdapi.v6 import MILESTONES
from bot.store import Delivery


def _event_total(event: Event) -> int | None:
    total = getattr(event, "total_steps", None)
    if isinstance(total, int):
        return total
    if event.number is not None and event.steps_to_go is not None:
        return event.number + event.steps_to_go
    return None


def _event_elapsed(event: Event) -> float | None:
    if event.elapsed_seconds is not None:
        return event.elapsed_seconds
    # Recorded by a tunewatch that did not keep it: the line still says it.
    line = parse_step_line(event.raw) if event.raw else None
    return line.elapsed_seconds if line is not None else None


def _event_model(event: Event) -> ModelInfo | None:
    """What a ready message shows of the model: kept as JSON in the event's detail."""
    return ModelInfo.from_json(event.detail)


def step_label(event: Event) -> str:
    """A step as people read it (``Step 2: Training Done``; a v6 milestone by its name), inert."""
    milestone = MILESTONES.get(event.raw or "")
    label = event.label or (milestone.label if milestone and milestone.label else "Step")
    if milestone is None and event.number is not None:
        label = f"Step {event.number}: {label}"
    return _line(inert(label))


def _step_embed(training_id: str, event: Event) -> discord.Embed:
    milestone = MILESTONES.get(event.raw or "")
    embed = discord.Embed(
        title=truncate(_line(f"{inert(training_id)} · {step_label(event)}"), TITLE_LIMIT),
        colour=COLOUR_RUNNING,
    )
    total = _event_total(event)
    done = event.number or 0
    embed.add_field(
        name="Progress", value=progress_bar(done, total if event.number else None), inline=True
    )
    if milestone is None and event.steps_to_go is not None:
        embed.add_field(name="Steps left", value=str(event.steps_to_go), inline=True)
    if milestone is None or event.eta_minutes is not None:
        embed.add_field(name="ETA", value=eta_text(event.eta_minutes), inline=True)
    elapsed = _event_elapsed(event)
    if elapsed is not None:
        embed.add_field(name="Elapsed", value=duration_text(elapsed), inline=True)
    if milestone is not None:
        embed.description = V6_STEP_WORDS[event.raw or ""]
    elif event.raw:
        embed.description = _code(truncate(event.raw, 300))
    if event.folded:
        s = "s" if event.folded > 1 else ""
        embed.add_field(
            name="Folded",
            value=f"{event.folded:,} earlier step{s} of this answer, not posted one by one",
            inline=False,
        )
    return embed


def event_embed(training_id: str, event: Event) -> discord.Embed:
    """A message for one delivered event (a step, or the final message)."""
    if event.kind is EventKind.STEP:
        embed = _step_embed(training_id, event)
    elif event.kind is EventKind.READY:
        embed = discord.Embed(
            title=truncate(f"{inert(training_id)} · Model ready", TITLE_LIMIT),
            description="The training finished and the model is ready to use.",
            colour=COLOUR_READY,
        )
        model = _event_model(event)
        if model is not None:
            _add_model_fields(embed, model)
    elif event.kind is EventKind.FAILED:
        embed = discord.Embed(
            title=truncate(f"{inert(training_id)} · Training failed", TITLE_LIMIT),
            description=truncate(f"Reason: {_reason_text(event.detail)}", DESCRIPTION_LIMIT),
            colour=COLOUR_FAILED,
        )
    else:
        embed = discord.Embed(
            title=truncate(f"{inert(training_id)} · Training unknown", TITLE_LIMIT),
            description=truncate(
                inert(event.detail or "The API repeatedly said it does not know this training.")
                + " Updates for it have stopped.",
                DESCRIPTION_LIMIT,
            ),
            colour=COLOUR_UNKNOWN,
        )
    if event.late:
        embed.set_footer(text="Late: this happened while tunewatch could not check the training.")
    return embed


def delivery_embed(delivery: Delivery) -> discord.Embed:
    """The message for a delivery row of an event (not an opening: it has none)."""
    if delivery.event is None:
        raise ValueError("an opening delivery has no event of its own")
    return event_embed(delivery.training_id, delivery.event)
