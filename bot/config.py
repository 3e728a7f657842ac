"""Typed settings from the environment and an optional ``.env`` file."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_BASE_URL = "https://stablediffusionapi.com/api/v3"
DEFAULT_API_V6_BASE_URL = "https://modelslab.com/api/v6"
# Below this, the API's spam filter may object to a key that polls (the docs suggest a minute or
# two between two status requests of one training): allowed, with a warning at start.
POLITE_POLL_INTERVAL = 30.0
MINUTE = 60.0
DAY = 86_400.0


class ConfigError(Exception):
    """Settings are missing or malformed; the message says what to set and where."""


class Settings(BaseSettings):
    """Every setting tunewatch reads; names are the environment variables (see .env.example)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        hide_input_in_errors=True,
        env_ignore_empty=True,
        # No `inf` or `nan` for any number: a poll interval of `inf` would never poll.
        allow_inf_nan=False,
    )

    DISCORD_TOKEN: SecretStr | None = None
    SD_API_KEY: SecretStr | None = None
    SD_API_BASE_URL: str = DEFAULT_API_BASE_URL
    SD_API_V6_BASE_URL: str = DEFAULT_API_V6_BASE_URL
    DATABASE_PATH: Path = Path("tunewatch.db")
    POLL_INTERVAL_SECONDS: Annotated[float, Field(ge=1, le=DAY)] = 30.0
    POLL_MAX_SECONDS: Annotated[float, Field(ge=1, le=7 * DAY)] | None = None
    POLL_POLICY: Literal["adaptive", "fixed"] = "adaptive"
    DISCORD_API_BASE: str = "https://discord.com/api/v10"
    DISCORD_GATEWAY_URL: str = "wss://gateway.discord.gg/"
    # A snowflake: a positive 64-bit integer.
    DISCORD_GUILD_ID: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    LOG_LEVEL: str = "INFO"

    # Subscriptions (abuse limits, API politeness).
    MAX_SUBSCRIPTIONS_PER_GUILD: Annotated[int, Field(ge=1, le=10_000)] = 50
    MAX_DM_ALERTS_PER_USER: Annotated[int, Field(ge=1, le=1_000)] = 25
    API_MAX_CONCURRENCY: Annotated[int, Field(ge=1, le=256)] = 16
    API_MAX_CONCURRENCY_PER_KEY: Annotated[int, Field(ge=1, le=64)] = 4
    API_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=5 * MINUTE)] = 15.0
    API_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=10)] = 4
    MAX_BACKOFF_SECONDS: Annotated[float, Field(gt=0, le=DAY)] = 900.0
    NOT_FOUND_CONFIRMATIONS: Annotated[int, Field(ge=1, le=100)] = 3
    NOT_FOUND_WINDOW_SECONDS: Annotated[float, Field(ge=0, le=7 * DAY)] = 300.0
    STEP_MESSAGES_PER_POLL: Annotated[int, Field(ge=2, le=100)] = 10
    STEP_MESSAGES_PER_TRAINING: Annotated[int, Field(ge=1, le=10_000)] = 50

    # Per-user API keys.
    TUNEWATCH_SECRET: SecretStr | None = None

    # Optional HTTP server: webhooks, health, metrics.
    HTTP_HOST: str = "127.0.0.1"
    HTTP_PORT: Annotated[int, Field(ge=0, le=65535)] | None = None
    PUBLIC_URL: str | None = None
    WEBHOOK_SECRET: SecretStr | None = None
    HTTP_MAX_CONNECTIONS: Annotated[int, Field(ge=1, le=65536)] = 128
    HTTP_READ_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _poll_gaps_in_order(self) -> Settings:
        if self.POLL_MAX_SECONDS is not None and self.POLL_MAX_SECONDS < self.POLL_INTERVAL_SECONDS:
            raise ValueError(
                f"POLL_MAX_SECONDS ({self.POLL_MAX_SECONDS:g}) must be at least "
                f"POLL_INTERVAL_SECONDS ({self.POLL_INTERVAL_SECONDS:g}): the longest gap "
                "between two polls cannot be shorter than the shortest"
            )
        return self

    @property
    def poll_max_seconds(self) -> float:
        """POLL_MAX_SECONDS, or its default: five times the interval."""
        return self.POLL_MAX_SECONDS or 5 * self.POLL_INTERVAL_SECONDS

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: object) -> object:
        # `FOO=` (or blanks) means "not set", for every setting: the default applies. An empty
        # environment variable is already dropped by env_ignore_empty (so .env still counts);
        # this covers blanks and keyword arguments.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("LOG_LEVEL")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("TUNEWATCH_SECRET")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail at start, not at the first /training-key set. The check is Fernet's own
        # (32 url-safe base64 bytes), done here with the stdlib; bot/secrets.py builds the cipher.
        if value is None:
            return None
        for entry in value.get_secret_value().split(","):
            try:
                ok = len(base64.urlsafe_b64decode(entry.strip().encode())) == 32
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    "must be a Fernet key, or several separated by commas (newest first); "
                    'generate one with: python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())"'
                )
        return value

    @field_validator("SD_API_BASE_URL", "SD_API_V6_BASE_URL", "DISCORD_API_BASE", "PUBLIC_URL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("DISCORD_GATEWAY_URL")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        return value


def load_settings(*, require_token: bool = False, env_file: str | None = ".env") -> Settings:
    """Read the settings; raise ConfigError with a readable message instead of a traceback."""
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the settings file {env_file}: {exc.strerror or exc}. Make it readable by "
            "this user, or remove it and set the settings in the environment."
        ) from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            lines.append(f"  {name}: {error['msg']}")
        raise ConfigError(
            "Some settings are malformed (environment or .env, see .env.example):\n"
            + "\n".join(lines)
        ) from None
    if require_token and settings.DISCORD_TOKEN is None:
        raise ConfigError(
            "DISCORD_TOKEN is not set. Put your bot token in the environment or in a .env file "
            "(copy .env.example to .env and fill in DISCORD_TOKEN); the README says where to get "
            "one."
        )
    return settings


def start_warnings(settings: Settings) -> list[str]:
    """Settings that work but deserve one line in the log at start."""
    warnings = []
    if settings.POLL_INTERVAL_SECONDS < POLITE_POLL_INTERVAL:
        warnings.append(
            f"POLL_INTERVAL_SECONDS={settings.POLL_INTERVAL_SECONDS:g} is below "
            f"{POLITE_POLL_INTERVAL:g}: the API's spam filter may object to a key that polls this "
            "often (its docs suggest a minute or two)."
        )
    return warnings
