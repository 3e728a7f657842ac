"""What the README promises that a test can hold it to: the invite URL's permissions, the
settings table, the commands table, the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from bot.__main__ import build_parser
from bot.config import Settings
from bot.preflight import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
READ_MESSAGE_HISTORY = 1 << 16
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38


def test_the_invite_url_asks_for_what_the_bot_uses() -> None:
    (permissions,) = re.findall(r"oauth2/authorize\?[^`]*permissions=(\d+)", README)
    wanted = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | SEND_MESSAGES_IN_THREADS
    wanted |= READ_MESSAGE_HISTORY  # finding a message sent before a crash
    wanted |= CREATE_PUBLIC_THREADS  # the thread style
    assert int(permissions) & wanted == wanted


def test_every_setting_is_in_the_settings_table() -> None:
    table = README[README.index("## Settings") : README.index("### How polling works")]
    for name in Settings.model_fields:
        assert f"`{name}`" in table, name


def test_the_commands_table_names_the_slash_commands() -> None:
    for command in (
        "training-status",
        "training-subscribe",
        "training-unsubscribe",
        "training-notify",
        "training-list",
        "training-key",
        "training-webhook",
    ):
        assert f"`/{command}" in README, command


def test_the_exit_codes_are_the_cli_s() -> None:
    text = " ".join(README[README.index("Exit codes, for every command") :][:400].split())
    for code, meaning in (
        (EXIT_OK, "done"),
        (EXIT_FAILED, "failed"),
        (EXIT_USAGE, "usage or settings"),
        (EXIT_UNREACHABLE, "Discord or the API unreachable"),
    ):
        assert f"{code} {meaning}" in text, (code, meaning)
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"tunewatch {name}" in README or name == "run", name
