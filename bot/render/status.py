"""The /training-status answer: state, progress, ETA, the log and the model."""

from __future__ import annotations

from datetime import datetime

import discord

from bot.render.text import (
    FIELD_VALUE_LIMIT,
    LOG_LIMIT,
    MODEL_LIMIT,
    TITLE_LIMIT,
    V6_WORDS,
    _code,
    _plain,
    duration_text,
    eta_text,
    fit_lines,
    inert,
    progress_bar,
    state_words,
    status_colour,
    truncate,
)
from bot.sdapi.status import Api, ModelInfo, TrainingStatus


def log_block(lines: tuple[str, ...] | list[str], limit: int = LOG_LIMIT) -> str:
    """The latest log lines in a code block, within ``limit`` characters."""
    kept: list[str] = []
    size = 0
    budget = limit - len("```\n\n```") - len("… (earlier lines hidden)\n")
    for line in reversed(lines):
        line = truncate(_plain(line), 300)
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
    kept.reverse()
    if not kept:
        return "_(no log yet)_"
    hidden = "… (earlier lines hidden)\n" if len(kept) < len(lines) else ""
    return f"```\n{hidden}" + "\n".join(kept) + "\n```"


def model_lines(model: ModelInfo) -> list[str]:
    """What is needed to use a model, one line each: the endpoint, then the request fields."""
    lines = [f"POST {model.endpoint}"] if model.endpoint else []
    lines += [f"{name}: {value}" for name, value in model.request]
    return lines


def _model_block(model: ModelInfo) -> str:
    lines = [truncate(_plain(line), 200) for line in model_lines(model)]
    if not lines:
        return "_(the answer shows no request)_"
    return "```\n" + fit_lines(lines, "", MODEL_LIMIT) + "\n```"


def _add_model_fields(embed: discord.Embed, model: ModelInfo) -> None:
    embed.add_field(
        name="Model",
        value=_code(truncate(model.model_id, 200)) if model.model_id else "not named",
        inline=False,
    )
    embed.add_field(name="Generate with it", value=_model_block(model), inline=False)


def _reason_text(reason: str | None, stage: str | None = None) -> str:
    text = inert(reason) if reason else "The API gave no reason."
    if stage:
        text += f" (during {inert(stage)})"
    return text


def status_embed(training_id: str, status: TrainingStatus, checked_at: datetime) -> discord.Embed:
    """The /training-status answer."""
    embed = discord.Embed(
        title=truncate(f"Training {inert(training_id)}", TITLE_LIMIT),
        colour=status_colour(status),
        timestamp=checked_at,
    )
    raw = truncate(status.raw_state, 100) if status.raw_state else "none"
    embed.add_field(name="State", value=f"{state_words(status)}\n{_code(raw)}", inline=True)
    embed.add_field(
        name="Progress", value=progress_bar(status.steps_done, status.total_steps), inline=True
    )
    has_eta = status.eta_seconds is not None or status.eta_minutes is not None
    if not status.terminal and (has_eta or status.api is not Api.V6):
        embed.add_field(
            name="ETA", value=eta_text(status.eta_minutes, status.eta_seconds), inline=True
        )
    if status.elapsed_seconds is not None:
        embed.add_field(name="Elapsed", value=duration_text(status.elapsed_seconds), inline=True)
    if status.failed:
        embed.add_field(
            name="Reason",
            value=truncate(
                _reason_text(status.failure_reason, status.failure_stage), FIELD_VALUE_LIMIT
            ),
            inline=False,
        )
    if status.finished and status.model is not None:
        _add_model_fields(embed, status.model)
    if status.api is Api.V6 and not status.log_lines:
        unknown = "The v6 trainer reports a state tunewatch does not know yet."
        embed.description = V6_WORDS.get(status.state, unknown) if status.state else unknown
    else:
        embed.description = log_block(status.log_lines)
    embed.set_footer(text="Checked")
    return embed
