"""Answering interactions within Discord's 3 seconds, whatever the API does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import discord

from bot.render import error_embed

T = TypeVar("T")

# Answer directly when the work is this quick, else defer first (Discord allows 3 s).
SOFT_DEADLINE = 1.5


async def answer_soon(
    interaction: discord.Interaction[Any],
    work: Awaitable[T],
    *,
    ephemeral: bool = False,
    soft_deadline: float = SOFT_DEADLINE,
    update: bool = False,
) -> T:
    """Run ``work``; if it is not done in ``soft_deadline`` seconds, defer the response (with
    ``update``: a button's deferred update, the answer edits the clicked message)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=soft_deadline)
    if not done and not interaction.response.is_done():
        if update:
            await interaction.response.defer()
        else:
            interaction.extras["deferred_ephemeral"] = ephemeral
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    return await task


async def reply(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    ephemeral: bool = False,
    view: discord.ui.View | None = None,
) -> None:
    """Send the answer whether the interaction was answered, deferred or not yet."""
    kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
    if content is not None:
        kwargs["content"] = content
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    if not interaction.response.is_done():
        await interaction.response.send_message(ephemeral=ephemeral, **kwargs)
        return
    if ephemeral and interaction.extras.get("deferred_ephemeral") is False:
        # The public "thinking…" message cannot turn private: remove it, answer privately.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    await interaction.followup.send(ephemeral=ephemeral, **kwargs)


async def reply_error(interaction: discord.Interaction[Any], message: str) -> None:
    """One clear sentence, only for the user who asked."""
    await reply(interaction, embed=error_embed(message), ephemeral=True)


async def update(
    interaction: discord.Interaction[Any],
    *,
    embed: discord.Embed | None = None,
    view: discord.ui.View | None = None,
) -> None:
    """Change the message whose button was clicked, whether the click was deferred or not."""
    kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    if not interaction.response.is_done():
        await interaction.response.edit_message(**kwargs)
    else:
        await interaction.edit_original_response(**kwargs)
