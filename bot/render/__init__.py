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

from bot.render import components, replies
from bot.render.errors import (
    NO_KEY_TEXT,
    USER_KEYS_DISABLED_TEXT,
    api_error_plain,
    api_error_text,
    pause_reason_text,
    slow_down_text,
)
from bot.render.events import delivery_embed, event_embed
from bot.render.lists import Listing, list_embed, list_pages, subscription_line
from bot.render.live import (
    Origin,
    allowed_mentions,
    dm_embed,
    final_embed,
    live_embed,
    mention_markup,
    outcome_of,
    ping_content,
    thread_name,
    took_text,
)
from bot.render.status import log_block, model_lines, status_embed
from bot.render.terminal import status_json, status_text, watch_line
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
    "Listing",
    "Origin",
    "allowed_mentions",
    "api_error_plain",
    "api_error_text",
    "components",
    "delivery_embed",
    "dm_embed",
    "duration_text",
    "error_embed",
    "eta_text",
    "event_embed",
    "final_embed",
    "fit_lines",
    "inert",
    "list_embed",
    "list_pages",
    "live_embed",
    "log_block",
    "mention_markup",
    "model_lines",
    "outcome_of",
    "pause_reason_text",
    "ping_content",
    "plain_state_words",
    "progress_bar",
    "replies",
    "slow_down_text",
    "state_words",
    "status_colour",
    "status_embed",
    "status_json",
    "status_text",
    "subscription_line",
    "thread_name",
    "took_text",
    "truncate",
    "watch_line",
]
