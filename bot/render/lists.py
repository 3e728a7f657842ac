"""/training-list: one line per subscription, in pages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import discord

from bot.events import EventKind
from bot.render.errors import pause_reason_text
from bot.render.live import mention_markup
from bot.render.text import (
    COLOUR_RUNNING,
    DESCRIPTION_LIMIT,
    fit_lines,
    inert,
    raw_state_words,
    truncate,
)
from bot.store import MentionOn, Style, Subscription, SubscriptionKind, SubscriptionStatus

LIST_PAGE_LINES = 10
FINISHED_SHOWN_HOURS = 24
TERMINAL_WORDS: dict[EventKind, str] = {
    EventKind.READY: "Model ready",
    EventKind.FAILED: "Training failed",
    EventKind.UNKNOWN: "Unknown to the API",
}
STYLE_WORDS: dict[Style, str] = {
    Style.LIVE: "live message",
    Style.THREAD: "thread",
    Style.FINAL: "final message only",
}
PINGS_ON: dict[MentionOn, str] = {
    MentionOn.READY: "when ready",
    MentionOn.FAILED: "on failure",
    MentionOn.BOTH: "at the end",
}


def subscription_line(sub: Subscription) -> str:
    """One line of /training-list: the training, where it goes, its state in words, how it is
    followed, and why it is paused."""
    where = f"<#{sub.channel_id}>" if sub.channel_id else "your DMs"
    state = TERMINAL_WORDS[sub.terminal] if sub.terminal else raw_state_words(sub.state)
    line = f"`{sub.training_id}` → {where} · {state}"
    if sub.kind is SubscriptionKind.CHANNEL and sub.style in STYLE_WORDS:
        line += f" · {STYLE_WORDS[sub.style]}"
    if sub.mention is not None:
        line += f" · pings {mention_markup(sub.mention)} {PINGS_ON[sub.mention.on]}"
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


@dataclass(frozen=True, slots=True)
class Listing:
    """What /training-list shows a member: the server's subscriptions (None outside a server)
    and their own DM alerts, with how many finished ones were left out."""

    server: list[Subscription] | None
    alerts: list[Subscription]
    hidden: int = 0
    show_finished: bool = False


def list_pages(listing: Listing) -> int:
    """How many pages the listing takes."""
    entries = len(listing.server or []) + len(listing.alerts)
    return max(1, math.ceil(entries / LIST_PAGE_LINES))


def list_embed(listing: Listing, page: int) -> tuple[discord.Embed, int]:
    """One page (from 1, clamped to the pages there are) and the page shown."""
    pages = list_pages(listing)
    page = max(1, min(page, pages))
    server = listing.server or []
    entries: list[tuple[str, Subscription]] = [("server", s) for s in server]
    entries += [("alerts", s) for s in listing.alerts]
    shown = entries[(page - 1) * LIST_PAGE_LINES : page * LIST_PAGE_LINES]
    parts: list[str] = []
    if listing.server is not None:
        active = sum(s.status is SubscriptionStatus.ACTIVE for s in server)
        lines = [subscription_line(s) for kind, s in shown if kind == "server"]
        if lines or page == 1:
            parts.append(f"**This server** ({active} active)")
            parts.append(fit_lines(lines, "No subscriptions.", DESCRIPTION_LIMIT // 2))
    lines = [subscription_line(s) for kind, s in shown if kind == "alerts"]
    if lines or page == pages:
        parts.append("**Your DM alerts**")
        parts.append(fit_lines(lines, "No DM alerts.", DESCRIPTION_LIMIT // 3))
    if listing.hidden:
        finished = listing.hidden
        parts.append(
            f"_{finished} finished more than {FINISHED_SHOWN_HOURS} hours ago "
            f"{'is' if finished == 1 else 'are'} hidden: show_finished: True shows "
            f"{'it' if finished == 1 else 'them'}._"
        )
    embed = discord.Embed(
        title="tunewatch subscriptions",
        description=truncate("\n".join(parts), DESCRIPTION_LIMIT),
        colour=COLOUR_RUNNING,
    )
    if pages > 1:
        embed.set_footer(text=f"Page {page} of {pages}")
    return embed, page
