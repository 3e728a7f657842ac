"""Settings as .env.example and the README document them: empty means the default, every number
has bounds, no inf or nan."""

from __future__ import annotations

import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pytest

from bot.config import ConfigError, Settings, load_settings, start_warnings


def _types(name: str) -> set[Any]:
    """The types a field holds, optional and Annotated wrappers removed."""
    annotation = Settings.model_fields[name].annotation
    args = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    return {typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in args}


def _constraints(name: str) -> list[object]:
    """The annotated_types constraints of a field, optional or not."""
    field = Settings.model_fields[name]
    found: list[object] = list(field.metadata)
    for arg in typing.get_args(field.annotation):
        for inner in getattr(arg, "__metadata__", ()):
            found.extend(getattr(inner, "metadata", ()))
    return found


NUMBERS = [name for name in Settings.model_fields if _types(name) & {int, float}]
FLOATS = [name for name in NUMBERS if float in _types(name)]


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def refused(**values: Any) -> str:
    """The message load_settings gives for these values (set in a .env file)."""
    with pytest.raises(ConfigError) as caught:
        load_settings_from(values)
    return str(caught.value)


def load_settings_from(values: dict[str, Any]) -> Settings:
    with tempfile.TemporaryDirectory() as folder:
        env_file = Path(folder) / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return load_settings(env_file=str(env_file))


def test_the_numbers_are_found() -> None:
    assert "POLL_INTERVAL_SECONDS" in FLOATS
    assert "HTTP_PORT" in NUMBERS
    assert "DISCORD_GUILD_ID" in NUMBERS
    assert len(NUMBERS) == 17
    assert len(FLOATS) == 6


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_an_empty_value_means_the_default(name: str, blank: str) -> None:
    assert getattr(settings(**{name: blank}), name) == getattr(settings(), name)


def test_empty_values_in_dotenv_mean_the_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}=\n" for name in Settings.model_fields))
    assert load_settings(env_file=str(env_file)) == settings()


def test_an_empty_environment_variable_leaves_dotenv_in_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POLL_INTERVAL_SECONDS=90\nLOG_LEVEL=debug\n")
    monkeypatch.setenv("POLL_INTERVAL_SECONDS", "")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    loaded = load_settings(env_file=str(env_file))
    assert loaded.POLL_INTERVAL_SECONDS == 90
    assert loaded.LOG_LEVEL == "WARNING"  # a value in the environment still wins


@pytest.mark.parametrize("name", NUMBERS)
def test_every_number_has_a_lower_and_an_upper_bound(name: str) -> None:
    kinds = {type(c) for c in _constraints(name)}
    assert kinds & {annotated_types.Ge, annotated_types.Gt}, name
    assert kinds & {annotated_types.Le, annotated_types.Lt}, name


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_no_infinity_or_nan(name: str, value: str) -> None:
    message = refused(**{name: value})
    assert f"{name}: Input should be a finite number" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL_SECONDS", "0.99"),
        ("POLL_INTERVAL_SECONDS", "0"),
        ("POLL_INTERVAL_SECONDS", "-60"),
        ("POLL_INTERVAL_SECONDS", "86401"),
        ("API_TIMEOUT_SECONDS", "0"),
        ("API_TIMEOUT_SECONDS", "301"),
        ("API_MAX_ATTEMPTS", "0"),
        ("API_MAX_ATTEMPTS", "11"),
        ("API_MAX_CONCURRENCY", "0"),
        ("API_MAX_CONCURRENCY", "257"),
        ("API_MAX_CONCURRENCY_PER_KEY", "65"),
        ("MAX_BACKOFF_SECONDS", "0"),
        ("MAX_BACKOFF_SECONDS", "86401"),
        ("NOT_FOUND_CONFIRMATIONS", "0"),
        ("NOT_FOUND_CONFIRMATIONS", "101"),
        ("NOT_FOUND_WINDOW_SECONDS", "-1"),
        ("NOT_FOUND_WINDOW_SECONDS", "604801"),
        ("MAX_SUBSCRIPTIONS_PER_GUILD", "0"),
        ("MAX_SUBSCRIPTIONS_PER_GUILD", "10001"),
        ("MAX_DM_ALERTS_PER_USER", "1001"),
        ("HTTP_PORT", "-1"),
        ("HTTP_PORT", "65536"),
        ("DISCORD_GUILD_ID", "0"),
        ("DISCORD_GUILD_ID", str(2**63)),
    ],
)
def test_out_of_bounds_is_refused_with_the_setting_named(name: str, value: str) -> None:
    message = refused(**{name: value})
    assert f"  {name}: Input should be" in message
    assert message.count("\n") == 1  # the heading and one line for this setting


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL_SECONDS", "1"),
        ("POLL_INTERVAL_SECONDS", "86400"),
        ("API_TIMEOUT_SECONDS", "0.3"),
        ("MAX_BACKOFF_SECONDS", "0.5"),
        ("NOT_FOUND_WINDOW_SECONDS", "0"),
        ("HTTP_PORT", "0"),
        ("HTTP_PORT", "65535"),
    ],
)
def test_bounds_are_inclusive_where_documented(name: str, value: str) -> None:
    assert math.isclose(float(getattr(settings(**{name: value}), name)), float(value))


def test_polling_below_thirty_seconds_is_one_warning() -> None:
    (warning,) = start_warnings(settings(POLL_INTERVAL_SECONDS="29.5"))
    assert "POLL_INTERVAL_SECONDS=29.5 is below 30" in warning
    assert "spam filter" in warning
    assert start_warnings(settings(POLL_INTERVAL_SECONDS="30")) == []
    assert start_warnings(settings()) == []


def test_unreadable_env_file_is_a_config_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=x\n")
    env_file.chmod(0)
    if os.access(env_file, os.R_OK):
        pytest.skip("this user (root) reads any file: an unreadable .env cannot be made here")
    with pytest.raises(ConfigError, match=r"^Cannot read the settings file .*: Permission denied"):
        load_settings(env_file=str(env_file))
