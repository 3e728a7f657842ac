"""Messages about a training's whole course: the live message (edited as each step completes),
the thread style's summary, the final messages, the DM alert, and whom a message may ping.

Each is a function of a ``Story`` (the events recorded up to one delivery, with when each was
observed): editing the live message again for the same delivery, after a restart, shows the
same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import discord

from bot.events import Event, EventKind
from bot.render.events import _event_elapsed, _event_model, _event_total, event_embed, step_label
from bot.render.status import _reason_text
from bot.render.text import (
    COLOUR_FAILED,
    COLOUR_READY,
    COLOUR_RUNNING,
    COLOUR_UNKNOWN,
    DESCRIPTION_LIMIT,
    TITLE_LIMIT,
    _code,
    _line,
    duration_text,
    inert,
    progress_bar,
    raw_state_words,
    truncate,
)
from bot.sdapi.status import Api, TrainingStatus, api_for
from bot.store import Mention, MentionKind, Story

STEP_LINES_SHOWN = 25  # the latest steps a live message lists (a flood is folded anyway)
OUTCOME_WORDS: dict[EventKind, str] = {
    EventKind.READY: "Model ready",
    EventKind.FAILED: "Training failed",
    EventKind.UNKNOWN: "Training unknown",
}
OUTCOME_COLOURS: dict[EventKind, discord.Colour] = {
    EventKind.READY: COLOUR_READY,
    EventKind.FAILED: COLOUR_FAILED,
    EventKind.UNKNOWN: COLOUR_UNKNOWN,
}
UNKNOWN_TEXT = "The API repeatedly said it does not know this training."


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a DM alert was made with a button, with the names the bot knows for it."""

    guild_id: int | None
    channel_id: int
    message_id: int | None = None
    """The live message to link to, if the alert was made from a channel following live."""
    guild_name: str | None = None
    channel_name: str | None = None


def outcome_of(status: TrainingStatus) -> EventKind | None:
    """How a status says a training ended (None: it has not)."""
    if status.finished:
        return EventKind.READY
    return EventKind.FAILED if status.failed else None


def thread_name(training_id: str) -> str:
    """The name of a thread style's thread (Discord allows 100 characters)."""
    return truncate(f"Training {training_id}", 100)


def timestamp(at: float, style: str) -> str:
    """A Discord timestamp (``t``: a time of day, ``R``: relative), shown in the reader's zone."""
    return f"<t:{int(at)}:{style}>"


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """A link that opens a message in Discord."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def _end(story: Story) -> Event | None:
    last = story.events[-1][0] if story.events else None
    return last if last is not None and last.kind.terminal else None


def _steps(story: Story) -> list[tuple[Event, float]]:
    return [(e, at) for e, at in story.events if e.kind is EventKind.STEP]


def training_duration(story: Story) -> tuple[float, bool] | None:
    """How long the training took up to its last recorded event, and whether the trainer's own
    clock says so (else: since tunewatch first saw it, a lower bound); None if unknown."""
    if not story.events:
        return None
    end_at = story.events[-1][1]
    timed = [(e, at, _event_elapsed(e)) for e, at in _steps(story)]
    measured = [(at, elapsed) for _, at, elapsed in timed if elapsed is not None]
    if measured:
        at, elapsed = measured[-1]
        return max(0.0, end_at - (at - elapsed)), True
    if story.first_seen_at is None:
        return None
    return max(0.0, end_at - story.first_seen_at), False


def took_text(story: Story) -> str | None:
    """``Took about 41 min.``, or a lower bound when the trainer gave no times."""
    found = training_duration(story)
    if found is None:
        return None
    seconds, measured = found
    if measured:
        return f"Took about {duration_text(seconds)}."
    return f"Took at least {duration_text(seconds)} (since tunewatch first saw it)."


def model_id_of(training_id: str, end: Event) -> str | None:
    """The model a ready training made: as the v6 trainer names it; for v3, the training id
    (the API's webhook calls it the model_id)."""
    if end.kind is not EventKind.READY:
        return None
    model = _event_model(end)
    if model is not None:
        return model.model_id
    return training_id if api_for(training_id) is Api.V3 else None


def next_text(training_id: str, end: Event) -> str:
    """What to do next, in one line."""
    if end.kind is EventKind.READY:
        model_id = model_id_of(training_id, end)
        if model_id:
            return f"Next: generate images with model_id {_code(model_id)}."
        return "Next: generate images with the new model."
    if end.kind is EventKind.FAILED:
        return (
            "Next: fix the cause, then start a new training; "
            f"/training-status {_code(training_id)} shows its log."
        )
    return f"Next: check the id and the API key with /training-status {_code(training_id)}."


def _outcome_lines(story: Story, end: Event) -> list[str]:
    """The reason (a failure), how long it took, and what to do next (naming the model)."""
    lines = []
    if end.kind is EventKind.FAILED:
        lines.append(f"Reason: {_reason_text(end.detail)}")
    elif end.kind is EventKind.UNKNOWN:
        lines.append(inert(end.detail or UNKNOWN_TEXT))
    took = took_text(story)
    if took is not None:
        lines.append(took)
    lines.append(next_text(story.training_id, end))
    return lines


def _progress(story: Story, end: Event | None) -> str:
    steps = _steps(story)
    if not steps:
        if end is not None:
            return "No step was recorded."
        state = f" ({raw_state_words(story.state)})" if story.state else ""
        return f"Waiting for the first step{state}."
    last, at = steps[-1]
    total = next((t for e, _ in reversed(steps) if (t := _event_total(e)) is not None), None)
    done = last.number if last.number is not None else len(steps)
    if end is not None and end.kind is EventKind.READY and total is not None:
        done = total
    line = progress_bar(done, total)
    if end is None and last.eta_minutes is not None:
        line += f" · ETA {timestamp(at + last.eta_minutes * 60, 'R')}"
    return line


def live_embed(story: Story, *, thread: bool = False) -> discord.Embed:
    """The live message (or the thread style's summary): title, progress, the steps so far
    with the time each completed, the ETA; its final form once the story has ended."""
    end = _end(story)
    title = f"Training {inert(story.training_id)}"
    if end is not None:
        title += f" · {OUTCOME_WORDS[end.kind]}"
    lines = [_progress(story, end)]
    steps = _steps(story)
    if steps:
        lines.append("")
        hidden = len(steps) - STEP_LINES_SHOWN
        if hidden > 0:
            lines.append(f"… {hidden} earlier step{'s' if hidden != 1 else ''}")
        for event, at in steps[-STEP_LINES_SHOWN:]:
            late = " (seen late)" if event.late else ""
            lines.append(f"{timestamp(at, 't')} {step_label(event)}{late}")
    if thread and end is None:
        lines += ["", "Each step is posted in the thread under this message."]
    if end is not None:
        lines += ["", *_outcome_lines(story, end)]
    embed = discord.Embed(
        title=truncate(_line(title), TITLE_LIMIT),
        description=truncate("\n".join(lines), DESCRIPTION_LIMIT),
        colour=COLOUR_RUNNING if end is None else OUTCOME_COLOURS[end.kind],
    )
    if story.events:
        embed.timestamp = datetime.fromtimestamp(story.events[-1][1], UTC)
    embed.set_footer(text="Updated")
    return embed


def final_embed(story: Story, *, short: bool = False) -> discord.Embed:
    """The final message: the outcome, the reason for a failure, how long it took, the model
    and what to do next. ``short``: the live and thread styles' new message under the live
    message, which shows the rest."""
    end = _end(story)
    if end is None:
        raise ValueError("the story has not ended")
    if short:
        return discord.Embed(
            title=truncate(f"{inert(story.training_id)} · {OUTCOME_WORDS[end.kind]}", TITLE_LIMIT),
            description=truncate("\n".join(_outcome_lines(story, end)), DESCRIPTION_LIMIT),
            colour=OUTCOME_COLOURS[end.kind],
        )
    embed = event_embed(story.training_id, end)
    lines = _outcome_lines(story, end)
    if end.kind is not EventKind.READY:
        lines = lines[1:]  # the reason (or the unknown text) is the description already
    embed.description = truncate(
        "\n".join([embed.description or "", *lines]).strip(), DESCRIPTION_LIMIT
    )
    return embed


def dm_embed(story: Story, origin: Origin | None) -> discord.Embed:
    """The DM when a training ends: the final message, saying where the alert came from and
    linking to the live message when there is one."""
    embed = final_embed(story)
    if origin is None:
        where = "From your DM alert (/training-notify)."
    else:
        channel = f"#{inert(origin.channel_name)}" if origin.channel_name else "a channel"
        server = f"**{inert(origin.guild_name)}**" if origin.guild_name else "a server"
        where = f"From {channel} in {server}"
        if origin.message_id is not None:
            link = message_link(origin.guild_id, origin.channel_id, origin.message_id)
            where += f" · [the live message]({link})"
        where += "."
    embed.description = truncate(f"{where}\n{embed.description or ''}", DESCRIPTION_LIMIT)
    return embed


def mention_markup(mention: Mention) -> str:
    """How the content of a message names a role or a member."""
    return f"<@&{mention.id}>" if mention.kind is MentionKind.ROLE else f"<@{mention.id}>"


def ping_content(mention: Mention | None, outcome: EventKind | None) -> str | None:
    """The final message's content: the mention, when this outcome pings it."""
    if mention is None or outcome is None or not mention.pings_for(outcome):
        return None
    return mention_markup(mention)


def allowed_mentions(mention: Mention | None, outcome: EventKind | None) -> discord.AllowedMentions:
    """Exactly who a message may ping: the subscription's role or member on a final message
    whose outcome it asked for, else nobody (text from the API never pings)."""
    if mention is None or outcome is None or not mention.pings_for(outcome):
        return discord.AllowedMentions.none()
    target = [discord.Object(id=mention.id)]
    if mention.kind is MentionKind.ROLE:
        return discord.AllowedMentions(
            everyone=False, users=False, roles=target, replied_user=False
        )
    return discord.AllowedMentions(everyone=False, users=target, roles=False, replied_user=False)
