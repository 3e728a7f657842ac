"""The real discord.py client against the loopback fake in tests/support/fakediscord.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from tests.support.fakediscord import (
    APP_ID,
    BOT_USER_ID,
    MENTION_EVERYONE,
    FakeDiscord,
)

GUILD = 111
CHANNEL = 222
OTHER_CHANNEL = 223
USER = 333
ROLE = 444000000000000001  # mentionable (ids of 17 digits or more, as Discord's)
QUIET_ROLE = 444000000000000002  # not mentionable


class Counter(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"count:(?P<n>\d+)"):
    """A persistent button carrying its state in its custom id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=str(n), custom_id=f"count:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> Counter:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if self.n >= 2:  # "stale": disable it and say so privately
            self.item.disabled = True
            await interaction.response.edit_message(view=self.view)
            await interaction.followup.send("too far", ephemeral=True)
            return
        await interaction.response.defer()  # a deferred update: nothing shows yet
        view = discord.ui.View(timeout=None)
        view.add_item(Counter(self.n + 1))
        await interaction.edit_original_response(content=f"at {self.n + 1}", view=view)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Text", custom_id="text")

    def __init__(self) -> None:
        super().__init__(custom_id="feedback-modal")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"got {self.text.value}", ephemeral=True)


class ProbeBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.late_codes: list[int] = []
        self.late_seen = asyncio.Event()
        self._define_commands()

    def _define_commands(self) -> None:
        tree = self.tree

        @tree.command(name="ping", description="Answer at once")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @tree.command(name="report", description="Defer, then follow up")
        async def report(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("report ready", ephemeral=True)

        @tree.command(name="echo", description="Typed options")
        async def echo(interaction: discord.Interaction, text: str, count: int) -> None:
            await interaction.response.send_message(text * count)

        @tree.command(name="slow", description="Misses the 3 s rule")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.3)  # the behaviour under test: answering too late
            try:
                await interaction.response.send_message("too late")
            except discord.NotFound as exc:
                self.late_codes.append(exc.code)
                self.late_seen.set()

        @tree.command(name="pick", description="A role or a member")
        async def pick(
            interaction: discord.Interaction, target: discord.Role | discord.Member
        ) -> None:
            kind = "role" if isinstance(target, discord.Role) else "member"
            mentionable = getattr(target, "mentionable", None)
            await interaction.response.send_message(f"{kind} {target.id} {mentionable}")

        @tree.command(name="feedback", description="Opens a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal())

        watch = app_commands.Group(name="watch", description="Watch trainings")

        @watch.command(name="add", description="Add a watch")
        async def add(interaction: discord.Interaction, model: str) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"watching {model}")

        tree.add_command(watch)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Counter)
        await self.tree.sync()
        guild = discord.Object(GUILD)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)


@pytest.fixture(autouse=True)
def no_discord_errors(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "discord.py logged errors:\n" + "\n".join(r.getMessage() for r in errors)


@pytest.fixture
def discord_at(monkeypatch: pytest.MonkeyPatch):
    def point(fake: FakeDiscord) -> None:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        gateway = yarl.URL(fake.gateway_url)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway)

    return point


@contextlib.asynccontextmanager
async def running(point: Any, **fake_options: Any) -> AsyncIterator[tuple[FakeDiscord, ProbeBot]]:
    fake = FakeDiscord(**fake_options)
    await fake.start()
    fake.add_guild(GUILD, "Test guild")
    fake.add_channel(GUILD, CHANNEL, "general")
    fake.add_channel(GUILD, OTHER_CHANNEL, "other")
    fake.add_user(USER, "alice")
    fake.add_role(GUILD, ROLE, "trainers", mentionable=True)
    fake.add_role(GUILD, QUIET_ROLE, "quiet")
    point(fake)
    bot = ProbeBot()
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_ready()
        async with asyncio.timeout(10):
            await bot.wait_until_ready()
        yield fake, bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 10)
        await fake.stop()


@pytest.fixture
async def env(discord_at: Any) -> AsyncIterator[tuple[FakeDiscord, ProbeBot]]:
    async with running(discord_at) as pair:
        yield pair


def text_channel(bot: ProbeBot, channel_id: int = CHANNEL) -> discord.TextChannel:
    channel = bot.get_channel(channel_id)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_login_ready_and_guild_cache(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    assert bot.user is not None
    assert bot.user.id == BOT_USER_ID
    assert bot.application_id == APP_ID
    assert fake.identify_count == 1
    guild = bot.get_guild(GUILD)
    assert guild is not None
    assert guild.name == "Test guild"
    assert {c.id for c in guild.text_channels} == {CHANNEL, OTHER_CHANNEL}
    assert guild.me is not None
    perms = text_channel(bot).permissions_for(guild.me)
    assert perms.send_messages
    assert perms.embed_links


async def test_command_sync_is_recorded(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    assert [key for key, _ in fake.command_syncs] == [None, GUILD]
    names = {c["name"] for c in fake.registered_commands[GUILD]}
    assert names == {"ping", "report", "echo", "slow", "pick", "feedback", "watch"}
    assert all(c["id"] for c in fake.registered_commands[None])


async def test_wrong_token_is_a_login_failure(discord_at: Any) -> None:
    fake = FakeDiscord()
    await fake.start()
    discord_at(fake)
    client = discord.Client(intents=discord.Intents.default())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
    finally:
        await client.close()
        await fake.stop()
    assert fake.requests[0].status == 401


async def test_immediate_response(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    interaction = await fake.invoke("ping", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    final = await interaction.wait_final()
    assert final["content"] == "pong"
    assert not interaction.ephemeral()
    assert not interaction.late
    assert interaction.payload["data"]["guild_id"] == str(GUILD)
    assert [m.content for m in fake.messages_in(CHANNEL)] == ["pong"]


async def test_deferred_ephemeral_followup(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    interaction = await fake.invoke("report", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    response = await interaction.wait_response()
    assert response["type"] == 5
    final = await interaction.wait_final()
    assert final["content"] == "report ready"
    assert interaction.ephemeral()
    assert len(interaction.followups) == 1


async def test_typed_options_and_subcommand(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    echo = await fake.invoke(
        "echo", {"text": "ab", "count": "3"}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
    )
    assert (await echo.wait_final())["content"] == "ababab"
    watch = await fake.invoke(
        "watch",
        {"model": "sdxl"},
        subcommand="add",
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
    )
    assert (await watch.wait_final())["content"] == "watching sdxl"
    assert watch.edits == [watch.edits[0]]


async def test_command_in_dms(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    interaction = await fake.invoke("ping", guild_id=None, channel_id=0, user_id=USER)
    assert (await interaction.wait_final())["content"] == "pong"
    assert "user" in interaction.payload
    assert "guild_id" not in interaction.payload["data"]
    assert [m.content for m in fake.dms_to(USER)] == ["pong"]


async def test_modal_round_trip(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    opened = await fake.invoke("feedback", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    modal = await opened.wait_final()
    assert modal["custom_id"] == "feedback-modal"
    submitted = await fake.submit_modal(
        "feedback-modal", {"text": "hello"}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
    )
    assert (await submitted.wait_final())["content"] == "got hello"
    assert submitted.ephemeral()


async def test_late_response_is_unknown_interaction(discord_at: Any) -> None:
    async with running(discord_at, interaction_deadline=0.1) as (fake, bot):
        interaction = await fake.invoke("slow", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
        await fake.wait_for(lambda _: interaction.late)
        async with asyncio.timeout(5):
            await bot.late_seen.wait()
        assert bot.late_codes == [10062]
        assert interaction.callback_statuses == [404]
        assert fake.messages_in(CHANNEL) == []


async def test_second_initial_callback_is_rejected(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    interaction = await fake.invoke("ping", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    await interaction.wait_response()
    url = f"{fake.api_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"type": 4, "data": {"content": "again"}}) as resp,
    ):
        assert resp.status == 400
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["code"] == 40060
    assert interaction.callback_statuses == [200, 400]


async def test_nonce_dedup(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    first = await text_channel(bot).send("once", nonce=4242)
    second = await text_channel(bot).send("once", nonce=4242)
    assert first.id == second.id
    assert [m.content for m in fake.messages_in(CHANNEL)] == ["once"]
    posts = [r for r in fake.requests if r.path == f"/channels/{CHANNEL}/messages"]
    assert len(posts) == 2
    assert posts[0].json["enforce_nonce"] is True


async def test_missing_permissions_and_cache_update(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    channel = text_channel(bot)
    async with asyncio.timeout(5):
        updated = asyncio.ensure_future(bot.wait_for("guild_channel_update"))
        fake.set_channel_access(CHANNEL, can_send=False)
        await updated
    assert channel.guild.me is not None
    assert not text_channel(bot).permissions_for(channel.guild.me).send_messages
    with pytest.raises(discord.Forbidden) as err:
        await channel.send("hi")
    assert err.value.code == 50013


async def test_embeds_dropped_without_embed_links(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    fake.set_channel_access(CHANNEL, can_send=True, embed_links=False, announce=False)
    await text_channel(bot).send("plain", embed=discord.Embed(title="rich"))
    assert fake.messages_in(CHANNEL)[0].embeds == []


async def test_unknown_channel(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    channel = text_channel(bot, OTHER_CHANNEL)
    fake.delete_channel(OTHER_CHANNEL, announce=False)
    with pytest.raises(discord.NotFound) as err:
        await channel.send("hi")
    assert err.value.code == 10003


async def test_direct_messages(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    dm = await bot.create_dm(discord.Object(USER))
    await dm.send("your training finished")
    assert [m.content for m in fake.dms_to(USER)] == ["your training finished"]
    assert fake.dms_to(USER)[0].channel_id == dm.id
    fake.add_user(444, "bob", dms_open=False)
    closed = await bot.create_dm(discord.Object(444))
    with pytest.raises(discord.Forbidden) as err:
        await closed.send("hello?")
    assert err.value.code == 50007
    assert fake.dms_to(444) == []


async def test_injected_failure_then_recovery(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    fake.fail_next(r"^/channels/\d+/messages$", 503, code=0)
    with pytest.raises(discord.DiscordServerError):
        await text_channel(bot).send("first")
    await text_channel(bot).send("second")
    assert [m.content for m in fake.messages_in(CHANNEL)] == ["second"]
    assert [r.status for r in fake.requests if r.path.endswith("/messages")] == [503, 200]


async def test_hold_then_release(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    hold = fake.hold(r"/messages$")
    sending = asyncio.create_task(text_channel(bot).send("held"))
    async with asyncio.timeout(5):
        await hold.arrived.wait()
    assert fake.messages == []
    hold.release()
    message = await asyncio.wait_for(sending, 5)
    assert fake.messages[0].id == message.id


async def test_request_held_when_the_client_dies_still_lands(
    env: tuple[FakeDiscord, ProbeBot],
) -> None:
    # A crash mid-delivery: Discord got the request, the bot never saw the answer.
    fake, bot = env
    hold = fake.hold(r"/messages$")
    sending = asyncio.create_task(text_channel(bot).send("in flight", nonce=77))
    async with asyncio.timeout(5):
        await hold.arrived.wait()
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    hold.release()
    await fake.wait_for(lambda f: len(f.messages) == 1)
    again = await text_channel(bot).send("in flight", nonce=77)  # the retry after a restart
    assert again.id == fake.messages[0].id
    assert len(fake.messages) == 1


async def test_gateway_reconnect_resumes(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, _ = env
    await fake.drop_gateway()
    await fake.wait_for(lambda f: f.resume_count == 1)
    assert fake.identify_count == 1
    interaction = await fake.invoke("ping", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    assert (await interaction.wait_final())["content"] == "pong"


async def test_channel_rate_limit_is_paced(discord_at: Any) -> None:
    async with running(discord_at, rate_limits=True, channel_window=0.5) as (fake, bot):
        channel = text_channel(bot)
        for i in range(12):
            await channel.send(f"m{i}")
        assert [m.content for m in fake.messages_in(CHANNEL)] == [f"m{i}" for i in range(12)]
        assert fake.rate_limited_count == 0
        posts = [r for r in fake.requests if r.path.endswith("/messages")]
        assert posts[-1].at - posts[0].at >= 2 * 0.5 * 0.9


async def test_global_rate_limit_is_retried(discord_at: Any) -> None:
    async with running(discord_at, rate_limits=True, global_limit=3) as (fake, bot):
        fake.add_channel(GUILD, 500)
        fake.add_channel(GUILD, 501)
        channels = [bot.get_partial_messageable(c) for c in (CHANNEL, OTHER_CHANNEL, 500, 501)]
        await asyncio.gather(*(c.send("hi") for c in channels))
        assert len(fake.messages) == 4
        assert fake.rate_limited_count >= 1
        assert any(r.status == 429 for r in fake.requests)


# -- additions for issue 16: flags, mentions, replies, threads, roles, buttons --------------------


async def test_silent_flag_and_what_allowed_mentions_lets_ping(
    env: tuple[FakeDiscord, ProbeBot],
) -> None:
    fake, bot = env
    text = f"<@&{ROLE}> <@&{QUIET_ROLE}> <@{USER}> @everyone"
    channel = text_channel(bot)
    await channel.send(text, silent=True, allowed_mentions=discord.AllowedMentions.none())
    only_role = discord.AllowedMentions(
        everyone=False, users=False, roles=[discord.Object(ROLE), discord.Object(QUIET_ROLE)]
    )
    await channel.send(text, allowed_mentions=only_role)
    await channel.send(text)  # no allowed_mentions: Discord parses every mention
    none, role, every = fake.messages_in(CHANNEL)
    assert none.silent
    assert not role.silent
    assert none.allowed_mentions == {"parse": []}
    assert (none.pinged_users, none.pinged_roles, none.pinged_everyone) == ([], [], False)
    # The quiet role is not mentionable, and the bot may not mention everyone.
    assert (role.pinged_users, role.pinged_roles, role.pinged_everyone) == ([], [ROLE], False)
    assert (every.pinged_users, every.pinged_roles, every.pinged_everyone) == (
        [USER],
        [ROLE],
        False,
    )
    # Escaped mentions are text.
    await channel.send(discord.utils.escape_mentions(text))
    assert fake.messages_in(CHANNEL)[-1].pinged_roles == []

    async with asyncio.timeout(5):
        updated = asyncio.ensure_future(bot.wait_for("guild_role_update"))
        fake.set_bot_permissions(GUILD, MENTION_EVERYONE)
        await updated
    assert channel.permissions_for(channel.guild.me).mention_everyone
    await channel.send(text)
    last = fake.messages_in(CHANNEL)[-1]
    assert (last.pinged_roles, last.pinged_everyone) == ([ROLE, QUIET_ROLE], True)
    # parse and a list of the same kind conflict, as on Discord.
    with pytest.raises(discord.HTTPException) as err:
        await bot.http.send_message(
            CHANNEL,
            params=_params(
                {"content": "x", "allowed_mentions": {"parse": ["users"], "users": [str(USER)]}}
            ),
        )
    assert err.value.code == 50035


def _params(payload: dict[str, Any]) -> Any:
    return discord.http.MultipartParameters(payload=payload, multipart=None, files=None)


async def test_replies_record_their_reference(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    channel = text_channel(bot)
    first = await channel.send("live")
    reply = await channel.send(
        "done", reference=first.to_reference(fail_if_not_exists=False), mention_author=False
    )
    assert reply.reference is not None
    assert reply.reference.message_id == first.id
    recorded = fake.messages_in(CHANNEL)[-1]
    assert recorded.message_reference is not None
    assert recorded.message_reference["message_id"] == str(first.id)
    assert recorded.allowed_mentions is not None
    assert recorded.allowed_mentions["replied_user"] is False
    fake.delete_message(first.id)
    # To a deleted message: sent without the reference when told not to fail, else refused.
    await channel.send("orphan", reference=first.to_reference(fail_if_not_exists=False))
    assert fake.messages_in(CHANNEL)[-1].message_reference is None
    with pytest.raises(discord.HTTPException) as err:
        await channel.send("refused", reference=first.to_reference(fail_if_not_exists=True))
    assert err.value.code == 50035


async def test_threads_from_messages(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    channel = text_channel(bot)
    summary = await channel.send("summary")
    thread = await summary.create_thread(name="Training X", auto_archive_duration=10080)
    assert thread.id == summary.id  # a thread started from a message shares its id
    assert thread.parent_id == CHANNEL
    assert fake.threads_of(CHANNEL) == [summary.id]
    await thread.send("step 1", silent=True)
    assert [m.content for m in fake.messages_in(summary.id)] == ["step 1"]
    with pytest.raises(discord.HTTPException) as err:
        await summary.create_thread(name="again")
    assert err.value.code == 160004

    # A message unarchives an archived thread; a locked one refuses.
    fake.archive_thread(thread.id)
    await bot.get_partial_messageable(thread.id).send("wakes it")
    assert fake.channels[thread.id]["archived"] is False
    fake.archive_thread(thread.id, locked=True)
    with pytest.raises(discord.HTTPException) as err:
        await bot.get_partial_messageable(thread.id).send("refused")
    assert err.value.code == 50083

    fake.add_channel(GUILD, 224, "no-threads", create_threads=False)
    fake.add_channel(GUILD, 225, "no-thread-posts", send_in_threads=False)
    no_threads = await bot.fetch_channel(224)
    assert isinstance(no_threads, discord.TextChannel)
    other = await no_threads.send("x")
    with pytest.raises(discord.Forbidden):
        await other.create_thread(name="nope")
    no_posts = await bot.fetch_channel(225)
    assert isinstance(no_posts, discord.TextChannel)
    parent = await no_posts.send("y")
    quiet = await parent.create_thread(name="mute")
    with pytest.raises(discord.Forbidden):
        await quiet.send("nope")


async def test_roles_and_mentionable_options(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    guild = bot.get_guild(GUILD)
    assert guild is not None
    role = guild.get_role(ROLE)
    assert role is not None
    assert role.mentionable
    assert {r.id for r in await guild.fetch_roles()} >= {GUILD, ROLE, QUIET_ROLE}
    for target, expected in (
        (QUIET_ROLE, f"role {QUIET_ROLE} False"),
        (USER, f"member {USER} None"),
    ):
        interaction = await fake.invoke(
            "pick", {"target": target}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
        )
        assert (await interaction.wait_final())["content"] == expected


async def test_buttons_update_defer_and_answer_privately(env: tuple[FakeDiscord, ProbeBot]) -> None:
    fake, bot = env
    view = discord.ui.View(timeout=None)
    view.add_item(Counter(1))
    await text_channel(bot).send("at 1", view=view)
    message = fake.messages_in(CHANNEL)[-1]
    assert message.custom_ids() == ["count:1"]

    # Deferred update, then an edit of the original: the clicked message changes.
    click = await fake.click(message, "count:1", user_id=USER)
    await fake.wait_for(lambda f: message.content == "at 2", what="the message edited")
    assert click.responses[0]["type"] == 6
    assert message.custom_ids() == ["count:2"]

    # Update (type 7) disabling the button, and a private followup.
    click = await fake.click(message, "count:2", user_id=USER)
    assert await click.wait_private() == "too far"
    assert click.responses[0]["type"] == 7
    assert message.button("count:2")["disabled"] is True
    assert [v["content"] for v in message.visible_states()] == ["at 1", "at 2", "at 2"]
    with pytest.raises(AssertionError):
        await fake.click(message, "count:2", user_id=USER)
