"""Pure rendering: training statuses, events and API errors -> Discord embeds or terminal text.

Every piece of text that comes from the API (states, labels, log lines, reasons, model info) is
made inert before it reaches Discord: in prose with :func:`inert` (markdown and mentions
escaped), inside code with :func:`_code` / :func:`_plain` (no way out of the code span).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import discord

from bot.events import Event, EventKind
from bot.reasons import PauseReason, parse_reason
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    InvalidTrainingId,
    NoCredits,
    RateLimited,
    ResponseTooLarge,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
    sentence,
)
from bot.sdapi.status import Api, ModelInfo, TrainingState, TrainingStatus, parse_step_line
from bot.sdapi.v6 import MILESTONES
from bot.store import Delivery, Subscription, SubscriptionStatus

# Discord's documented embed limits.
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
LOG_LIMIT = 1800  # room for the log inside the description, leaving space for the rest
MODEL_LIMIT = 900  # the model's request in a field, leaving room for the code fence

COLOUR_RUNNING = discord.Colour.blurple()
COLOUR_READY = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
COLOUR_UNKNOWN = discord.Colour.light_grey()

STATE_WORDS: dict[TrainingState, str] = {
    TrainingState.QUEUED: "Queued",
    TrainingState.DEPLOYING_GPU: "Getting a GPU ready",
    TrainingState.TRAINING_STARTED: "Training",
    TrainingState.TRAINING_SUCCESS: "Training done",
    TrainingState.TRAINED_MODEL_COMPRESSING: "Compressing the model",
    TrainingState.TRAINED_MODEL_UPLOADING: "Uploading the model",
    TrainingState.TRAINED_MODEL_UPLOADED: "Model uploaded",
    TrainingState.DEPLOYING_MODEL: "Deploying the model",
    TrainingState.MODEL_READY: "Model ready",
    TrainingState.TRAINING_COMPLETED: "Trained: preparing the model for use",
    TrainingState.TRAINING_FAILED: "Training failed",
    TrainingState.TRAINING_CANCELLED: "Training cancelled",
}
# What a v6 run's status says in words (it has no log to show).
V6_WORDS: dict[TrainingState, str] = {
    TrainingState.QUEUED: "The v6 trainer has the run queued.",
    TrainingState.TRAINING_STARTED: "The v6 trainer has the run: queued or training.",
    TrainingState.TRAINING_COMPLETED: (
        "Training finished; the model is being prepared for use (this can take a while)."
    ),
    TrainingState.MODEL_READY: "The model is ready to use.",
    TrainingState.TRAINING_CANCELLED: "The v6 trainer cancelled the run.",
    TrainingState.TRAINING_FAILED: "The v6 trainer reports the run failed.",
}
V6_STEP_WORDS: dict[str, str] = {
    "training_started": "The v6 trainer has the run: queued or training.",
    "training_completed": (
        "Training finished. The model is being prepared for use: a message follows when it is "
        "ready."
    ),
}
V6_ID_EXAMPLE = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"


def truncate(text: str, limit: int) -> str:
    """Cut text to at most ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def inert(text: str) -> str:
    """Text from the API made safe in prose: markdown (links, emphasis, headings) shown as
    typed, mentions (``@everyone``, ``<@&id>``) unable to ping."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def _line(text: str) -> str:
    """One line (titles and field names cannot hold more)."""
    return " ".join(text.split())


def _plain(text: str) -> str:
    """Text from the API, safe inside a code block and free of mention syntax."""
    return text.replace("```", "`\u200b``").replace("@", "@\u200b")


def _code(text: str) -> str:
    """Text from the API as inline code; a backtick in it cannot close the span."""
    return "`" + _line(text).replace("`", "\u02cb").replace("@", "@\u200b") + "`"


def state_words(status: TrainingStatus) -> str:
    """The state in words, with the raw state when it is unknown."""
    if status.state is not None:
        return STATE_WORDS[status.state]
    if status.raw_state:
        return f"Running (state {_code(truncate(status.raw_state, 64))} is unknown)"
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


def eta_text(minutes: int | None, seconds: float | None = None) -> str:
    """A human ETA, from seconds when given (a queued answer's ETA is in seconds)."""
    if seconds is not None:
        if seconds <= 0:
            return "any moment now"
        if seconds < 60:
            return f"about {math.ceil(seconds)} s"
        minutes = math.ceil(seconds / 60)
    if minutes is None:
        return "unknown"
    if minutes <= 0:
        return "any moment now"
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"


def duration_text(seconds: float) -> str:
    """A duration as people say it: ``41 s``, ``18 min``, ``1 h 5 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


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
    kept: list[str] = []
    size = 0
    lines = model_lines(model)
    for i, line in enumerate(lines):
        line = truncate(_plain(line), 200)
        tail = f"… and {len(lines) - i} more"
        if size + len(line) + 1 + len(tail) > MODEL_LIMIT:
            kept.append(tail)
            break
        kept.append(line)
        size += len(line) + 1
    return "```\n" + "\n".join(kept) + "\n```" if kept else "_(the answer shows no request)_"


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


def status_text(training_id: str, status: TrainingStatus, checked_at: datetime) -> str:
    """The same status for a terminal (no Discord markup)."""
    lines = [
        f"Training {training_id} ({status.api} API)",
        f"  state:    {plain_state_words(status)} ({status.raw_state or 'none'})",
        f"  progress: {progress_bar(status.steps_done, status.total_steps)}",
    ]
    if not status.terminal:
        lines.append(f"  ETA:      {eta_text(status.eta_minutes, status.eta_seconds)}")
    if status.elapsed_seconds is not None:
        lines.append(f"  elapsed:  {duration_text(status.elapsed_seconds)}")
    if status.failed:
        reason = status.failure_text or "the API gave no reason"
        lines.append(f"  reason:   {reason}")
    if status.finished and status.model is not None:
        lines.append(f"  model:    {status.model.model_id or 'not named'}")
        lines.extend(f"    {line}" for line in model_lines(status.model))
    lines.append(f"  checked:  {checked_at.isoformat(timespec='seconds')}")
    if status.api is Api.V3 or status.log_lines:
        lines.append("  log:")
        lines.extend(f"    {line}" for line in status.log_lines or ("(no log yet)",))
    return "\n".join(lines)


def plain_state_words(status: TrainingStatus) -> str:
    """The state in words, for a terminal."""
    if status.state is not None:
        return STATE_WORDS[status.state]
    return "Running (state unknown)"


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


def _step_embed(training_id: str, event: Event) -> discord.Embed:
    milestone = MILESTONES.get(event.raw or "")
    label = event.label or (milestone.label if milestone and milestone.label else "Step")
    if milestone is None and event.number is not None:
        label = f"Step {event.number}: {label}"
    embed = discord.Embed(
        title=truncate(_line(f"{inert(training_id)} · {inert(label)}"), TITLE_LIMIT),
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
    """The message for a delivery row."""
    return event_embed(delivery.training_id, delivery.event)


def subscription_line(sub: Subscription) -> str:
    """One line of /training-list."""
    where = f"<#{sub.channel_id}>" if sub.channel_id else "your DMs"
    state = _code(truncate(sub.state, 64)) if sub.state else "not checked yet"
    if sub.terminal is EventKind.READY:
        state = "model ready"
    elif sub.terminal is EventKind.FAILED:
        state = "failed"
    elif sub.terminal is EventKind.UNKNOWN:
        state = "unknown to the API"
    line = f"`{sub.training_id}` → {where} · {state}"
    if sub.status is SubscriptionStatus.PAUSED:
        reason = pause_reason_text(sub.reason) if sub.reason else "no reason recorded"
        line += f" · **paused**: {reason}"
    elif sub.status is SubscriptionStatus.DONE:
        line += " · done"
    elif sub.last_error:
        line += f" · last check failed: {inert(truncate(sub.last_error, 120))}"
    if sub.status is SubscriptionStatus.ACTIVE and sub.terminal is None and sub.next_poll_at:
        why = f" ({inert(sub.poll_reason)})" if sub.poll_reason else ""
        line += f" · next check <t:{int(sub.next_poll_at)}:R>{why}"
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


# -- API errors in words ---------------------------------------------------------------------------


def api_error_text(exc: SdApiError) -> str:
    """One Discord sentence for an API error (may hold a relative timestamp and code spans)."""
    return _error_sentence(exc, markup=True, now=None)


def api_error_plain(exc: SdApiError, now: datetime | None = None) -> str:
    """The same sentence for a terminal or a JSON answer: no Discord markup."""
    return _error_sentence(exc, markup=False, now=now)


def _error_sentence(exc: SdApiError, *, markup: bool, now: datetime | None) -> str:
    api = "The Stable Diffusion API"

    def quote(text: str) -> str:
        return inert(text) if markup else text

    def code(text: str) -> str:
        return _code(text) if markup else text

    if isinstance(exc, InvalidTrainingId):
        if exc.api == Api.V6:
            return (
                "That is not a valid training id for the v6 trainer: its ids are UUIDs, like "
                f"{code(V6_ID_EXAMPLE)}."
            )
        return (
            "That is not a valid training id: use the id the API returned when the training "
            f"was created (letters, digits, {code('-')} and {code('_')}, 1 to 64 characters)."
        )
    if isinstance(exc, InvalidApiKey):
        return f"{api} rejected the API key: {quote(exc.api_message or 'Invalid API key')}."
    if isinstance(exc, TrainingNotFound):
        if exc.training_id:
            return (
                f"{api} does not know training {code(exc.training_id)}; check the id and that "
                "the training was created with this API key."
            )
        return f"{api} does not know this training id."
    if isinstance(exc, NoCredits):
        return "The API key has no credits left: add credits to its Stable Diffusion API account."
    if isinstance(exc, RateLimited):
        if markup:
            when = f"<t:{int(exc.retry_at.timestamp())}:R>"
        else:
            left = (exc.retry_at - (now or datetime.now(UTC))).total_seconds()
            when = f"in {duration_text(max(0.0, left))}"
        return f"{api} is rate limiting requests; try again {when}."
    if isinstance(exc, ResponseTooLarge):
        return f"{sentence(exc.reason)[:-1]}, which tunewatch does not read; try again later."
    if isinstance(exc, ApiUnavailable):
        if exc.http_status is not None and exc.http_status >= 500:
            return sentence(exc.reason)
        if exc.api_message:
            return f"{api} failed to answer ({quote(exc.api_message)}); try again in a moment."
        if exc.api_message is not None:
            return f"{api} answered with an error and no message; try again in a moment."
        return f"{api} could not be reached; try again in a few minutes."
    if isinstance(exc, UnexpectedResponse):
        if exc.api_message:
            return f"{api} refused the request: {quote(exc.api_message)}."
        if exc.reason != UnexpectedResponse.default_reason:
            return sentence(exc.reason)
        return f"{api} sent a response tunewatch could not read."
    return sentence(exc.reason)


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


def slow_down_text(retry_after: float) -> str:
    """A member asked too often: when they may ask again."""
    at = int(datetime.now(UTC).timestamp() + max(1.0, retry_after))
    return f"You are asking tunewatch very often; try again <t:{at}:R>."
