"""Typed settings from the environment and an optional ``.env`` file."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_BASE_URL = "https://stablediffusionapi.com/api/v3"


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
    )

    DISCORD_TOKEN: SecretStr | None = None
    SD_API_KEY: SecretStr | None = None
    SD_API_BASE_URL: str = DEFAULT_API_BASE_URL
    DATABASE_PATH: Path = Path("tunewatch.db")
    POLL_INTERVAL_SECONDS: Annotated[float, Field(gt=0)] = 60.0
    DISCORD_API_BASE: str = "https://discord.com/api/v10"
    DISCORD_GATEWAY_URL: str = "wss://gateway.discord.gg/"
    DISCORD_GUILD_ID: int | None = None
    LOG_LEVEL: str = "INFO"

    # Subscriptions (abuse limits, API politeness).
    MAX_SUBSCRIPTIONS_PER_GUILD: Annotated[int, Field(ge=1)] = 50
    MAX_DM_ALERTS_PER_USER: Annotated[int, Field(ge=1)] = 25
    API_MAX_CONCURRENCY: Annotated[int, Field(ge=1)] = 16
    API_MAX_CONCURRENCY_PER_KEY: Annotated[int, Field(ge=1)] = 4
    API_TIMEOUT_SECONDS: Annotated[float, Field(gt=0)] = 15.0
    API_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=10)] = 4
    MAX_BACKOFF_SECONDS: Annotated[float, Field(gt=0)] = 900.0
    NOT_FOUND_CONFIRMATIONS: Annotated[int, Field(ge=1)] = 3
    NOT_FOUND_WINDOW_SECONDS: Annotated[float, Field(ge=0)] = 300.0

    # Per-user API keys.
    TUNEWATCH_SECRET: SecretStr | None = None

    # Optional HTTP server: webhooks, health, metrics.
    HTTP_HOST: str = "127.0.0.1"
    HTTP_PORT: Annotated[int, Field(ge=0, le=65535)] | None = None
    PUBLIC_URL: str | None = None
    WEBHOOK_SECRET: SecretStr | None = None
    HTTP_MAX_CONNECTIONS: Annotated[int, Field(ge=1)] = 128
    HTTP_READ_TIMEOUT_SECONDS: Annotated[float, Field(gt=0)] = 10.0

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

    @field_validator("SD_API_BASE_URL", "DISCORD_API_BASE", "PUBLIC_URL")
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

    @field_validator(
        "DISCORD_TOKEN",
        "SD_API_KEY",
        "TUNEWATCH_SECRET",
        "WEBHOOK_SECRET",
        "DISCORD_GUILD_ID",
        "HTTP_PORT",
        "PUBLIC_URL",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `FOO=` in .env means "not set", as in .env.example.
        if isinstance(value, str) and not value.strip():
            return None
        return value


def load_settings(*, require_token: bool = False, env_file: str | None = ".env") -> Settings:
    """Read the settings; raise ConfigError with a readable message instead of a traceback."""
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
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
