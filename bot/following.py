"""Following a training from Discord: what /training-subscribe, /training-notify and the buttons
that do the same share (the checks, asking the API within Discord's 3 seconds, subscribing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.interactions import answer_soon, reply_error
from bot.keys import NoKeyAvailable
from bot.lookups import SlowDown
from bot.render import replies
from bot.sdapi.client import validate_training_id
from bot.sdapi.errors import SdApiError
from bot.sdapi.status import Api, TrainingStatus, api_for
from bot.store import Following, Mention, MentionKind, MentionOn, Style, SubscriptionKind

if TYPE_CHECKING:
    from bot.app import TunewatchBot

# An interaction's follow-up stays valid for 15 minutes, but a person waits seconds, not minutes.
API_BUDGET_SECONDS = 12.0

Mentionable = discord.Role | discord.Member | discord.User


@dataclass(frozen=True, slots=True)
class Fetched:
    """A training's status as a member asked for it."""

    training_id: str
    key_ref: str
    status: TrainingStatus


async def fetch_status(
    bot: TunewatchBot,
    interaction: discord.Interaction[Any],
    raw_id: str,
    api: Api | None,
    *,
    ephemeral: bool = False,
    update: bool = False,
    key_ref: str | None = None,
) -> Fetched | None:
    """Validate the id, pick the key (the member's, or the one ``key_ref`` names), ask the API
    (deferring the answer when it is slow); on any error, answer privately and return None."""
    try:
        chosen = api_for(raw_id, api)
        training_id = validate_training_id(raw_id, chosen)
        if key_ref is None:
            key_ref, key = await bot.keys.key_for_user(interaction.user.id)
        else:
            found = await bot.keys.key_for(key_ref)
            if found is None:
                await reply_error(
                    interaction, render.pause_reason_text(bot.keys.missing_reason(key_ref))
                )
                return None
            key = found
        status = await answer_soon(
            interaction,
            bot.lookups.status(
                training_id,
                key_ref,
                key,
                chosen,
                member_id=interaction.user.id,
                budget=API_BUDGET_SECONDS,
            ),
            ephemeral=ephemeral,
            update=update,
        )
    except SdApiError as exc:
        await reply_error(interaction, render.api_error_text(exc))
        return None
    except NoKeyAvailable:
        await reply_error(interaction, render.NO_KEY_TEXT)
        return None
    except SlowDown as exc:
        await reply_error(interaction, render.slow_down_text(exc.retry_after))
        return None
    return Fetched(training_id, key_ref, status)


def post_refusal(interaction: discord.Interaction[Any], style: Style) -> str | None:
    """Why tunewatch cannot follow a training in this channel in this style, or None."""
    perms = interaction.app_permissions
    in_thread = isinstance(interaction.channel, discord.Thread)
    sends = perms.send_messages_in_threads if in_thread else perms.send_messages
    if not (perms.view_channel and perms.embed_links and sends):
        return replies.CANNOT_POST_TEXT
    if style is Style.THREAD:
        if in_thread:
            return replies.THREAD_IN_THREAD_TEXT
        needed = (
            (perms.create_public_threads, "Create Public Threads"),
            (perms.send_messages_in_threads, "Send Messages in Threads"),
        )
        missing = [name for granted, name in needed if not granted]
        if missing:
            return replies.thread_permissions_text(missing)
    return None


def mention_refusal(
    interaction: discord.Interaction[Any], target: Mentionable | None
) -> str | None:
    """Why tunewatch could not ping this role, or None (a member can always be pinged)."""
    if not isinstance(target, discord.Role):
        return None
    if target.is_default():
        return replies.EVERYONE_ROLE_TEXT
    if not target.mentionable and not interaction.app_permissions.mention_everyone:
        return replies.role_not_mentionable_text(target.id)
    return None


def mention_of(target: Mentionable | None, on: MentionOn) -> Mention | None:
    """The stored form of a command's mention option."""
    if target is None:
        return None
    kind = MentionKind.ROLE if isinstance(target, discord.Role) else MentionKind.USER
    return Mention(kind, target.id, on)


async def follow(
    bot: TunewatchBot,
    interaction: discord.Interaction[Any],
    kind: SubscriptionKind,
    fetched: Fetched,
    *,
    limit: int,
    following: Following | None = None,
    channel_id: int | None = None,
) -> bool:
    """Record what the API just said (steps so far are the baseline), then subscribe; returns
    whether the subscription already existed as asked. Raises LimitReached."""
    await bot.tracker.ingest(fetched.training_id, fetched.key_ref, fetched.status)
    _, already = await bot.store.subscriptions.subscribe(
        kind=kind,
        guild_id=interaction.guild_id,
        channel_id=(channel_id or interaction.channel_id)
        if kind is SubscriptionKind.CHANNEL
        else None,
        user_id=interaction.user.id,
        training_id=fetched.training_id,
        key_ref=fetched.key_ref,
        limit=limit,
        now=datetime.now(UTC).timestamp(),
        following=following,
    )
    bot.tracker.wake()
    if bot.deliverer is not None:
        bot.deliverer.wake()  # a live message is posted at once
    return already
