"""Buttons: their labels, and the custom ids that carry everything a click needs.

A button's custom id names its action and its target (a subscription, or a training and its
API), so any tunewatch process handles a click on any message, however old: the handlers in
``cogs/buttons.py`` are registered for these templates at start. The layouts built here are
never stored by discord.py (a stored view per message would be kept for ever).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import discord

from bot.sdapi.status import Api

# Discord allows 100 characters; the longest here is 16 + a 64-character training id.
SUB_ID = r"tw:(?P<action>refresh|dm|unsub):s:(?P<sub>[0-9]{1,19})"
TRAINING_ID = r"tw:(?P<action>refresh|follow|dm):t:(?P<api>v3|v6):(?P<training>[A-Za-z0-9_-]{1,64})"
LIST_PAGE = r"tw:list:(?P<page>[0-9]{1,4}):(?P<finished>[01])"

LABELS: dict[str, str] = {
    "refresh": "Refresh",
    "follow": "Follow here",
    "dm": "DM me when ready",
    "unsub": "Unsubscribe",
}
_STYLES: dict[str, discord.ButtonStyle] = {
    "refresh": discord.ButtonStyle.secondary,
    "follow": discord.ButtonStyle.primary,
    "dm": discord.ButtonStyle.secondary,
    "unsub": discord.ButtonStyle.danger,
}


def sub_custom_id(action: str, sub_id: int) -> str:
    """The custom id of a button on a subscription's message."""
    return f"tw:{action}:s:{sub_id}"


def training_custom_id(action: str, training_id: str, api: Api) -> str:
    """The custom id of a button on a /training-status answer."""
    return f"tw:{action}:t:{api.value}:{training_id}"


def list_custom_id(page: int, show_finished: bool) -> str:
    """The custom id of a page button of /training-list."""
    return f"tw:list:{page}:{int(show_finished)}"


class ButtonRow(discord.ui.View):
    """A message's buttons, for their layout only: the persistent handlers take the clicks by
    custom id, so discord.py must not keep this view (it would, for every message sent)."""

    def __init__(self, buttons: Iterable[discord.ui.Button[ButtonRow]] = ()) -> None:
        super().__init__(timeout=None)
        for button in buttons:
            self.add_item(button)

    def is_finished(self) -> bool:
        """Never listening: see the class docstring."""
        return True

    def is_dispatchable(self) -> bool:
        """Nothing to dispatch to it: see the class docstring."""
        return False


def _button(action: str, custom_id: str, *, disabled: bool = False) -> discord.ui.Button[ButtonRow]:
    return discord.ui.Button(
        label=LABELS[action], custom_id=custom_id, style=_STYLES[action], disabled=disabled
    )


def subscription_buttons(sub_id: int, *, disabled: bool = False) -> ButtonRow:
    """Refresh, DM me when ready, Unsubscribe: on live and final messages."""
    return ButtonRow(
        _button(action, sub_custom_id(action, sub_id), disabled=disabled)
        for action in ("refresh", "dm", "unsub")
    )


def status_buttons(training_id: str, api: Api, *, in_guild: bool) -> ButtonRow:
    """Refresh, Follow here (in a server), DM me when ready: on a /training-status answer."""
    actions = ("refresh", "follow", "dm") if in_guild else ("refresh", "dm")
    return ButtonRow(_button(a, training_custom_id(a, training_id, api)) for a in actions)


def list_buttons(page: int, pages: int, show_finished: bool) -> ButtonRow | None:
    """Previous and Next for a /training-list longer than one page (pages from 1)."""
    if pages <= 1:
        return None
    buttons: list[discord.ui.Button[ButtonRow]] = []
    for label, to, off in (("Previous", page - 1, page <= 1), ("Next", page + 1, page >= pages)):
        # Two buttons of a message may not share a custom id, even disabled ones.
        custom_id = f"tw:list:none:{label.lower()}" if off else list_custom_id(to, show_finished)
        buttons.append(discord.ui.Button(label=label, custom_id=custom_id, disabled=off))
    return ButtonRow(buttons)


def disabled(components: Iterable[discord.Component]) -> ButtonRow:
    """The buttons of a message, all disabled (what a stale button turns its message into)."""
    buttons: list[discord.ui.Button[ButtonRow]] = []
    for row in components:
        children = row.children if isinstance(row, discord.ActionRow) else [row]
        for child in children:
            if isinstance(child, discord.Button) and child.custom_id is not None:
                buttons.append(
                    discord.ui.Button(
                        label=child.label,
                        custom_id=child.custom_id,
                        style=child.style,
                        disabled=True,
                    )
                )
    return ButtonRow(buttons)


def matches(template: str, custom_id: str) -> re.Match[str] | None:
    """A custom id against one of the templates above."""
    return re.fullmatch(template, custom_id)
