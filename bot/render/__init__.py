"""Pure rendering: training statuses, events and API errors -> Discord embeds or terminal text.

Every piece of text that comes from the API (states, labels, log lines, reasons, model info) is
made inert before it reaches Discord: in prose with :func:`inert` (markdown and mentions
escaped), inside code with ``_code`` / ``_plain`` (no way out of the code span).

The package: ``text`` (words and markup shared by all), ``status`` (/training-status),
``events`` (the tracker's messages), ``errors`` (API errors and pause reasons), ``lists``
(/training-list), ``terminal`` (the CLI). ``from bot import render`` then ``render.X`` reaches
all of them.
"""

from __future__ import annotations

from bot.render.errors import (
    NO_KEY_TEXT,
    USER_KEYS_DISABLED_TEXT,
    api_error_plain,
    api_error_text,
    pause_reason_text,
    slow_down_text,
)
from bot.render.events import delivery_embed, event_embed
from bot.render.lists import subscription_line
from bot.render.status import log_block, model_lines, status_embed
from bot.render.terminal import status_text
from bot.render.text import (
    COLOUR_FAILED,
    COLOUR_READY,
    COLOUR_RUNNING,
    COLOUR_UNKNOWN,
    DESCRIPTION_LIMIT,
    EMBED_TOTAL_LIMIT,
    FIELD_VALUE_LIMIT,
    FOOTER_LIMIT,
    LOG_LIMIT,
    MODEL_LIMIT,
    STATE_WORDS,
    TITLE_LIMIT,
    V6_ID_EXAMPLE,
    V6_STEP_WORDS,
    V6_WORDS,
    duration_text,
    error_embed,
    eta_text,
    fit_lines,
    inert,
    plain_state_words,
    progress_bar,
    state_words,
    status_colour,
    truncate,
)

__all__ = [
    "COLOUR_FAILED",
    "COLOUR_READY",
    "COLOUR_RUNNING",
    "COLOUR_UNKNOWN",
    "DESCRIPTION_LIMIT",
    "EMBED_TOTAL_LIMIT",
    "FIELD_VALUE_LIMIT",
    "FOOTER_LIMIT",
    "LOG_LIMIT",
    "MODEL_LIMIT",
    "NO_KEY_TEXT",
    "STATE_WORDS",
    "TITLE_LIMIT",
    "USER_KEYS_DISABLED_TEXT",
    "V6_ID_EXAMPLE",
    "V6_STEP_WORDS",
    "V6_WORDS",
    "api_error_plain",
    "api_error_text",
    "delivery_embed",
    "duration_text",
    "error_embed",
    "eta_text",
    "event_embed",
    "fit_lines",
    "inert",
    "log_block",
    "model_lines",
    "pause_reason_text",
    "plain_state_words",
    "progress_bar",
    "slow_down_text",
    "state_words",
    "status_colour",
    "status_embed",
    "status_text",
    "subscription_line",
    "truncate",
]
