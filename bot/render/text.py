"""Words and markup shared by every message: limits, colours, states, durations, inert text."""

from __future__ import annotations

import math

import discord

from bot.sdapi.status import TrainingState, TrainingStatus

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


def raw_state_words(raw: str | None) -> str:
    """A state as stored (the API's word: ``training_started``) in words; an unknown one shown
    as it is, inert."""
    if not raw:
        return "not checked yet"
    key = raw.strip().lower()
    state = TrainingState._value2member_map_.get(key)
    if key in ("training_canceled", "canceled", "cancelled"):
        state = TrainingState.TRAINING_CANCELLED
    if isinstance(state, TrainingState):
        return STATE_WORDS[state]
    return f"state {_code(truncate(raw, 64))}"


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


def plain_state_words(status: TrainingStatus) -> str:
    """The state in words, for a terminal."""
    if status.state is not None:
        return STATE_WORDS[status.state]
    return "Running (state unknown)"


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
