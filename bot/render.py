"""Pure rendering: training statuses and events -> Discord embeds or terminal text."""

from __future__ import annotations

from datetime import datetime

import discord

from bot.events import Event, EventKind
from bot.reasons import PauseReason, parse_reason
from bot.sdapi.status import TrainingState, TrainingStatus
from bot.store import Delivery, Subscription, SubscriptionStatus

# Discord's documented embed limits.
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
LOG_LIMIT = 1800  # room for the log inside the description, leaving space for the rest

COLOUR_RUNNING = discord.Colour.blurple()
COLOUR_READY = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
COLOUR_UNKNOWN = discord.Colour.light_grey()

STATE_WORDS: dict[TrainingState, str] = {
    TrainingState.DEPLOYING_GPU: "Getting a GPU ready",
    TrainingState.TRAINING_STARTED: "Training",
    TrainingState.TRAINING_SUCCESS: "Training done",
    TrainingState.TRAINED_MODEL_COMPRESSING: "Compressing the model",
    TrainingState.TRAINED_MODEL_UPLOADING: "Uploading the model",
    TrainingState.TRAINED_MODEL_UPLOADED: "Model uploaded",
    TrainingState.DEPLOYING_MODEL: "Deploying the model",
    TrainingState.MODEL_READY: "Model ready",
    TrainingState.TRAINING_FAILED: "Training failed",
}


def truncate(text: str, limit: int) -> str:
    """Cut text to at most ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _plain(text: str) -> str:
    """Text from the API, safe inside a code block and free of mention syntax."""
    return text.replace("```", "`\u200b``").replace("@", "@\u200b")


def state_words(status: TrainingStatus) -> str:
    """The state in words, with the raw state when it is unknown."""
    if status.state is not None:
        return STATE_WORDS[status.state]
    if status.raw_state:
        return f"Running (state `{_plain(truncate(status.raw_state, 64))}` is unknown)"
    return "Running (state unknown)"


def status_colour(status: TrainingStatus) -> discord.Colour:
    """Colour of a status embed by outcome."""
    if status.finished:
        return COLOUR_READY
    if status.failed:
        return COLOUR_FAILED
    if status.state is None:
        return COLOUR_UNKNOWN
    return COLOUR_RUNNING


def progress_bar(done: int, total: int | None, width: int = 12) -> str:
    """`▰▰▰▱▱▱ 3/6 steps` or `3 steps done` when the total is unknown."""
    if not total or total <= 0:
        return f"{done} step{'s' if done != 1 else ''} done"
    done = max(0, min(done, total))
    filled = round(width * done / total)
    return f"{'▰' * filled}{'▱' * (width - filled)} {done}/{total} steps"


def eta_text(minutes: int | None) -> str:
    """A human ETA."""
    if minutes is None:
        return "unknown"
    if minutes <= 0:
        return "any moment now"
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"


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


def status_embed(training_id: str, status: TrainingStatus, checked_at: datetime) -> discord.Embed:
    """The /training-status answer."""
    embed = discord.Embed(
        title=truncate(f"Training {training_id}", TITLE_LIMIT),
        colour=status_colour(status),
        timestamp=checked_at,
    )
    raw = truncate(status.raw_state, 100) if status.raw_state else "none"
    embed.add_field(name="State", value=f"{state_words(status)}\n`{_plain(raw)}`", inline=True)
    embed.add_field(
        name="Progress", value=progress_bar(status.steps_done, status.total_steps), inline=True
    )
    if not status.terminal:
        embed.add_field(name="ETA", value=eta_text(status.eta_minutes), inline=True)
    if status.failed and status.failure_reason:
        embed.add_field(
            name="Reason",
            value=truncate(_plain(status.failure_reason), FIELD_VALUE_LIMIT),
            inline=False,
        )
    embed.description = log_block(status.log_lines)
    embed.set_footer(text="Checked")
    return embed


def status_text(training_id: str, status: TrainingStatus, checked_at: datetime) -> str:
    """The same status for a terminal."""
    lines = [
        f"Training {training_id}",
        f"  state:    {state_words(status)} ({status.raw_state or 'none'})",
        f"  progress: {progress_bar(status.steps_done, status.total_steps)}",
    ]
    if not status.terminal:
        lines.append(f"  ETA:      {eta_text(status.eta_minutes)}")
    if status.failed and status.failure_reason:
        lines.append(f"  reason:   {status.failure_reason}")
    lines.append(f"  checked:  {checked_at.isoformat(timespec='seconds')}")
    lines.append("  log:")
    lines.extend(f"    {line}" for line in status.log_lines or ("(no log yet)",))
    return "\n".join(lines)


def _step_title(event: Event) -> str:
    label = event.label or "Step"
    number = f"Step {event.number}: " if event.number is not None else ""
    return f"{number}{label}"


def event_embed(training_id: str, event: Event) -> discord.Embed:
    """A message for one delivered event (a step, or the final message)."""
    if event.kind is EventKind.STEP:
        embed = discord.Embed(
            title=truncate(f"{training_id} · {_step_title(event)}", TITLE_LIMIT),
            colour=COLOUR_RUNNING,
        )
        if event.steps_to_go is not None:
            total = (event.number or 0) + event.steps_to_go
            embed.add_field(
                name="Progress",
                value=progress_bar(event.number or 0, total if event.number else None),
                inline=True,
            )
            embed.add_field(name="Steps left", value=str(event.steps_to_go), inline=True)
        embed.add_field(name="ETA", value=eta_text(event.eta_minutes), inline=True)
        if event.raw:
            embed.description = f"`{truncate(_plain(event.raw), 300)}`"
    elif event.kind is EventKind.READY:
        embed = discord.Embed(
            title=truncate(f"{training_id} · Model ready", TITLE_LIMIT),
            description="The training finished and the model is ready to use.",
            colour=COLOUR_READY,
        )
    elif event.kind is EventKind.FAILED:
        reason = _plain(event.detail) if event.detail else "The API gave no reason."
        embed = discord.Embed(
            title=truncate(f"{training_id} · Training failed", TITLE_LIMIT),
            description=truncate(f"Reason: {reason}", DESCRIPTION_LIMIT),
            colour=COLOUR_FAILED,
        )
    else:
        embed = discord.Embed(
            title=truncate(f"{training_id} · Training unknown", TITLE_LIMIT),
            description=truncate(
                _plain(event.detail or "The API repeatedly said it does not know this training.")
                + " Updates for it have stopped.",
                DESCRIPTION_LIMIT,
            ),
            colour=COLOUR_UNKNOWN,
        )
    if event.late:
        embed.set_footer(text="Late: this happened while tunewatch could not check the training.")
    return embed


def delivery_embed(delivery: Delivery) -> discord.Embed:
    """The message for a delivery row."""
    return event_embed(delivery.training_id, delivery.event)


def subscription_line(sub: Subscription) -> str:
    """One line of /training-list."""
    where = f"<#{sub.channel_id}>" if sub.channel_id else "your DMs"
    state = sub.state or "not checked yet"
    if sub.terminal is EventKind.READY:
        state = "model ready"
    elif sub.terminal is EventKind.FAILED:
        state = "failed"
    elif sub.terminal is EventKind.UNKNOWN:
        state = "unknown to the API"
    line = f"`{sub.training_id}` → {where} · {_plain(state)}"
    if sub.status is SubscriptionStatus.PAUSED:
        reason = pause_reason_text(sub.reason) if sub.reason else "no reason recorded"
        line += f" · **paused**: {reason}"
    elif sub.status is SubscriptionStatus.DONE:
        line += " · done"
    elif sub.last_error:
        line += f" · last check failed: {_plain(truncate(sub.last_error, 120))}"
    return line


def fit_lines(lines: list[str], empty: str, limit: int = FIELD_VALUE_LIMIT) -> str:
    """As many lines as fit in ``limit`` characters, then how many were left out."""
    if not lines:
        return empty
    out: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        tail = f"… and {len(lines) - i} more"
        if size + len(line) + 1 + len(tail) > limit:
            out.append(tail)
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def error_embed(message: str) -> discord.Embed:
    """One clear sentence about what went wrong."""
    return discord.Embed(description=truncate(message, DESCRIPTION_LIMIT), colour=COLOUR_FAILED)


_PAUSE_TEXT: dict[PauseReason, str] = {
    PauseReason.CHANNEL_DELETED: "The channel was deleted.",
    PauseReason.NO_ACCESS: (
        "tunewatch lost access to <#{detail}> (Missing Access); fix the channel's permissions, "
        "then subscribe again."
    ),
    PauseReason.MISSING_PERMISSIONS: (
        "tunewatch lost permission to post in <#{detail}> (Missing Permissions); fix the "
        "channel's permissions, then subscribe again."
    ),
    PauseReason.DMS_CLOSED: (
        "Your DMs are closed to tunewatch: allow direct messages from this server's members, "
        "then run /training-notify again."
    ),
    PauseReason.USER_UNKNOWN: "Discord does not know this user any more.",
    PauseReason.THREAD_ARCHIVED: "The thread is archived; unarchive it, then subscribe again.",
    PauseReason.DISCORD_REFUSED: "Discord refused the message ({detail}).",
    PauseReason.OPERATOR_KEY_MISSING: "The bot's operator API key (SD_API_KEY) is not set.",
    PauseReason.USER_KEYS_OFF: (
        "Personal API keys are turned off on this bot (TUNEWATCH_SECRET is not set); "
        "subscribe again to use the operator's key."
    ),
    PauseReason.KEY_UNREADABLE: (
        "tunewatch can no longer read the API key this subscription used (the bot's secret "
        "changed); set it again with /training-key set, then subscribe again."
    ),
    PauseReason.KEY_REMOVED: (
        "The API key this subscription used was removed; subscribe again to resume."
    ),
}


def pause_reason_text(stored: str) -> str:
    """A stored pause reason (see bot.reasons) as one sentence for Discord."""
    code, detail = parse_reason(stored)
    if code is None:
        return _plain(detail)  # written by an older tunewatch: shown as it is
    return _PAUSE_TEXT[code].format(detail=_plain(detail))


NO_KEY_TEXT = (
    "tunewatch needs a Stable Diffusion API key for that: set yours with `/training-key set`, "
    "or ask the bot's operator to set SD_API_KEY."
)
USER_KEYS_DISABLED_TEXT = (
    "Personal API keys are turned off on this bot: its operator has not set TUNEWATCH_SECRET, "
    "which tunewatch needs to store keys encrypted."
)
