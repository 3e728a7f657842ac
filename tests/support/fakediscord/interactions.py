"""Interactions: slash commands, autocomplete, modals sent to the bot, and its answers."""

from __future__ import annotations

import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.support.fakediscord.model import (
    APP_ID,
    BOT_USER_ID,
    EPHEMERAL,
    EVERYONE_PERMISSIONS,
    OPTION_CASTS,
    Message,
    Request,
    _error,
    _json_response,
)

if TYPE_CHECKING:
    from tests.support.fakediscord import FakeDiscord


class Interaction:
    """One INTERACTION_CREATE sent by :meth:`FakeDiscord.invoke` and what the bot answered."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any]) -> None:
        self._fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.channel_id = int(payload["channel"]["id"])
        self.guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.created_at = time.monotonic()
        self.responses: list[dict[str, Any]] = []  # every initial callback payload the bot sent
        self.callback_statuses: list[int] = []  # HTTP status answered to each of them
        self.followups: list[dict[str, Any]] = []  # POST /webhooks/{app}/{token} payloads
        self.edits: list[dict[str, Any]] = []  # PATCH .../messages/@original payloads
        self._followup_at: list[float] = []
        self._edit_at: list[float] = []
        self.original: Message | None = None
        self._late = False
        message = payload.get("message")
        self.message_id = int(message["id"]) if message else None
        """A component's interaction: the message whose button was clicked."""

    @property
    def late(self) -> bool:
        return self._late

    @property
    def acknowledged(self) -> bool:
        return 200 in self.callback_statuses

    def _final(self) -> dict[str, Any] | None:
        if not self.responses:
            return None
        first = self.responses[0]
        if first.get("type") in (5, 6):
            firsts = [(t, p) for t, p in zip(self._followup_at, self.followups, strict=True)][:1]
            firsts += [(t, p) for t, p in zip(self._edit_at, self.edits, strict=True)][:1]
            return min(firsts, key=lambda e: e[0])[1] if firsts else None
        return first.get("data") or {}

    async def wait_response(self, timeout: float = 10.0) -> dict[str, Any]:
        await self._fake.wait_for(lambda _: bool(self.responses), timeout, f"callback for {self}")
        return self.responses[0]

    async def wait_final(self, timeout: float = 10.0) -> dict[str, Any]:
        await self._fake.wait_for(lambda _: self._final() is not None, timeout, f"final {self}")
        final = self._final()
        assert final is not None
        return final

    def ephemeral(self) -> bool:
        final = self._final()
        return bool(int((final or {}).get("flags") or 0) & 64)

    def private_texts(self) -> list[str]:
        """What only the member who clicked or typed was told: ephemeral answers and
        followups, as their text and embed descriptions."""
        out = []
        first = self.responses[:1]
        answers = [r.get("data") or {} for r in first if r.get("type") == 4]
        for answer in [*answers, *self.followups]:
            if int(answer.get("flags") or 0) & EPHEMERAL:
                parts = [answer.get("content") or ""]
                parts += [e.get("description") or "" for e in answer.get("embeds") or []]
                out.append(" ".join(p for p in parts if p))
        return out

    async def wait_private(self, timeout: float = 10.0) -> str:
        """The first private answer, once there is one."""
        await self._fake.wait_for(lambda _: bool(self.private_texts()), timeout, f"{self} private")
        return self.private_texts()[0]

    def __repr__(self) -> str:
        name = self.payload["data"].get("name") or self.payload["data"].get("custom_id")
        return f"<Interaction {name!r} id={self.id} responses={len(self.responses)}>"


class Interactions:
    """Sending interactions and serving the interaction REST routes (a mixin of FakeDiscord)."""

    def _find_command(self, name: str, guild_id: int | None) -> tuple[dict[str, Any] | None, bool]:
        if guild_id is not None:
            for cmd in self.registered_commands.get(guild_id, []):
                if cmd["name"] == name:
                    return cmd, True
        for cmd in self.registered_commands.get(None, []):
            if cmd["name"] == name:
                return cmd, False
        return None, False

    def _base_interaction(
        self, type_: int, *, guild_id: int | None, channel_id: int, user_id: int, permissions: int
    ) -> dict[str, Any]:
        interaction_id = self.snowflake()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": type_,
            "token": f"itoken-{interaction_id}-{secrets.token_hex(8)}",
            "version": 1,
            "attachment_size_limit": 26214400,
            "locale": "en-US",
            "entitlements": [],
        }
        if guild_id is not None:
            if channel_id in self.channels:
                channel = self._channel_payload(channel_id)
            else:
                channel = {"id": str(channel_id), "type": 0, "guild_id": str(guild_id)}
                channel.update(name="unknown", position=0, permission_overwrites=[])
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel_id=str(channel_id),
                channel=channel,
                member=self._member_payload(user_id, permissions),
                app_permissions=str(self.channel_permissions(channel_id)),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            dm_id = self._dm_channel_for(user_id)
            payload.update(
                channel_id=str(dm_id),
                channel=self._channel_payload(dm_id),
                user=self.user_payload(user_id),
                app_permissions=str(EVERYONE_PERMISSIONS & ~(1 << 31)),
                authorizing_integration_owners={"0": str(user_id)},
                context=1,
            )
        return payload

    def _typed_options(
        self, schema: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        by_name = {o["name"]: o for o in schema}
        out: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for name, value in options.items():
            opt_type = int(by_name.get(name, {}).get("type", 3))
            if opt_type in OPTION_CASTS:
                out.append({"name": name, "type": opt_type, "value": OPTION_CASTS[opt_type](value)})
                continue
            snowflake = str(getattr(value, "id", value))
            out.append({"name": name, "type": opt_type, "value": snowflake})
            if opt_type == 9:  # mentionable: a role of the guild, else a member
                is_role = int(snowflake) in self.roles or int(snowflake) in self.guilds
                opt_type = 8 if is_role else 6
            if opt_type == 8:
                resolved.setdefault("roles", {})[snowflake] = self.role_payload(int(snowflake))
            elif opt_type == 6:
                resolved.setdefault("users", {})[snowflake] = self.user_payload(int(snowflake))
                member = dict(self._member_payload(int(snowflake)))
                member.pop("user")
                member["permissions"] = "0"
                resolved.setdefault("members", {})[snowflake] = member
            elif opt_type == 7 and int(snowflake) in self.channels:
                channel = self._channel_payload(int(snowflake))
                channel["permissions"] = str(EVERYONE_PERMISSIONS)
                resolved.setdefault("channels", {})[snowflake] = channel
        return out, resolved

    # ------------------------------------------------------------------ interactions
    async def invoke(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
        app_permissions: int | None = None,
        subcommand: str | None = None,
    ) -> Interaction:
        """Send a slash command. ``subcommand`` may be ``"sub"`` or ``"group sub"``."""
        command, guild_synced = self._find_command(name, guild_id)
        payload = self._base_interaction(
            2, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        if app_permissions is not None:
            payload["app_permissions"] = str(app_permissions)
        schema = (command or {}).get("options", [])
        path = subcommand.split() if subcommand else []
        for part in path:
            schema = next((o for o in schema if o["name"] == part), {}).get("options", [])
        typed, resolved = self._typed_options(schema, options or {})
        for depth, part in reversed(list(enumerate(path))):
            kind = 2 if depth < len(path) - 1 else 1
            typed = [{"name": part, "type": kind, "options": typed}]
        data: dict[str, Any] = {
            "id": str(command["id"]) if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": typed,
        }
        if resolved:
            data["resolved"] = resolved
        if guild_synced and guild_id is not None:
            data["guild_id"] = str(guild_id)
        payload["data"] = data
        return await self._send_interaction(payload)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        *,
        focused: str,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
    ) -> Interaction:
        """Send an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) while ``focused`` is being typed;
        the bot answers with callback type 8 and ``data.choices``."""
        command, guild_synced = self._find_command(name, guild_id)
        payload = self._base_interaction(
            4, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        typed, _ = self._typed_options((command or {}).get("options", []), options)
        for option in typed:
            if option["name"] == focused:
                option["focused"] = True
                option["value"] = str(option["value"])
        data: dict[str, Any] = {
            "id": str(command["id"]) if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": typed,
        }
        if guild_synced and guild_id is not None:
            data["guild_id"] = str(guild_id)
        payload["data"] = data
        return await self._send_interaction(payload)

    async def click(
        self,
        message: Message,
        custom_id: str,
        *,
        user_id: int,
        permissions: int = 0,
    ) -> Interaction:
        """A member clicks a button of a message (MESSAGE_COMPONENT, type 3). A disabled or
        missing button cannot be clicked: AssertionError."""
        button = message.button(custom_id)
        assert not button.get("disabled"), f"{custom_id} is disabled"
        assert not message.deleted, "the message was deleted"
        payload = self._base_interaction(
            3,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            user_id=user_id,
            permissions=permissions,
        )
        payload["message"] = self._message_payload(message)
        payload["data"] = {"custom_id": custom_id, "component_type": int(button["type"])}
        return await self._send_interaction(payload)

    async def submit_modal(
        self,
        custom_id: str,
        values: dict[str, str],
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
    ) -> Interaction:
        """Submit a modal; mirrors the layout (action rows or labels) the bot sent it with."""
        uses_labels = False
        for interaction in self.interactions.values():
            for response in interaction.responses:
                modal = response.get("data") or {}
                if response.get("type") == 9 and modal.get("custom_id") == custom_id:
                    uses_labels = any(c.get("type") == 18 for c in modal.get("components", []))
        components = []
        for key, value in values.items():
            text_input = {"type": 4, "id": len(components) + 2, "custom_id": key, "value": value}
            if uses_labels:
                components.append({"type": 18, "id": len(components) + 1, "component": text_input})
            else:
                components.append(
                    {"type": 1, "id": len(components) + 1, "components": [text_input]}
                )
        payload = self._base_interaction(
            5, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        payload["data"] = {"custom_id": custom_id, "components": components}
        return await self._send_interaction(payload)

    # ------------------------------------------------------------------ interaction REST
    def _interaction_by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    async def _callback(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self.interactions.get(int(match[1]))
        if interaction is None or interaction.token != match[2]:
            return _error(404, "Unknown interaction", 10062)
        body = record.json or {}
        interaction.responses.append(body)
        if record.at - interaction.created_at > self.interaction_deadline:
            interaction._late = True
            interaction.callback_statuses.append(404)
            return _error(404, "Unknown interaction", 10062)
        if interaction.acknowledged:
            interaction.callback_statuses.append(400)
            return _error(400, "Interaction has already been acknowledged.", 40060)
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        target = self._find_message(interaction.message_id or 0)
        if kind in (6, 7) and (interaction.payload["type"] not in (3, 5) or target is None):
            interaction.callback_statuses.append(400)
            return _error(400, "Interaction has an invalid response type", 40004)
        interaction.callback_statuses.append(200)
        flags = int(data.get("flags") or 0)
        info: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.payload["type"],
            "activity_instance_id": None,
            "response_message_id": None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(flags & 64),
        }
        result: dict[str, Any] = {"interaction": info}
        if kind in (6, 7):  # deferred update / update: the clicked message is the original
            assert target is not None
            interaction.original = target
            if kind == 7:
                self._edit(target, data)
            info["response_message_id"] = str(target.id)
            result["resource"] = {"type": kind, "message": self._message_payload(target)}
        if kind in (4, 5):
            if kind == 4:
                msg = self._new_message(interaction.channel_id, data, interaction_id=interaction.id)
                interaction.original = msg
            else:  # deferred: a "thinking" placeholder that is not recorded as a message
                msg = Message(
                    self.snowflake(), interaction.channel_id, "", [], None, BOT_USER_ID,
                    time.monotonic(), flags=(flags & 64) | 128, interaction_id=interaction.id,
                )  # fmt: skip
            info["response_message_id"] = str(msg.id)
            result["resource"] = {"type": kind, "message": self._message_payload(msg)}
        return _json_response(result)

    async def _followup(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self._interaction_by_token(match[2])
        if interaction is None or not interaction.acknowledged:
            return _error(404, "Unknown Webhook", 10015)
        body = record.json or {}
        interaction.followups.append(body)
        interaction._followup_at.append(time.monotonic())
        msg = self._new_message(interaction.channel_id, body, interaction_id=interaction.id)
        if record.query.get("wait") in ("1", "true", "True"):
            return _json_response(self._message_payload(msg))
        return web.Response(status=204)

    async def _webhook_message(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self._interaction_by_token(match[2])
        if interaction is None or not interaction.acknowledged:
            return _error(404, "Unknown Webhook", 10015)
        if match[3] != "@original":
            msg = next((m for m in self.messages if m.id == int(match[3])), None)
            if msg is None or msg.interaction_id != interaction.id or msg.deleted:
                return _error(404, "Unknown Message", 10008)
            return self._apply_message_op(record, msg)
        if record.method == "PATCH":
            interaction.edits.append(record.json or {})
            interaction._edit_at.append(time.monotonic())
            if interaction.original is None:  # first edit after a defer shows the message
                first = interaction.responses[0].get("data") or {}
                body = {**(record.json or {}), "flags": first.get("flags", 0)}
                interaction.original = self._new_message(
                    interaction.channel_id, body, interaction_id=interaction.id
                )
                return _json_response(self._message_payload(interaction.original))
        if interaction.original is None or interaction.original.deleted:
            return _error(404, "Unknown Message", 10008)
        return self._apply_message_op(record, interaction.original)
