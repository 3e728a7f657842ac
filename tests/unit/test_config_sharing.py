"""The settings of several instances: DATABASE_URL, SHARD_COUNT and SHARD_IDS, and what the bot
makes of them (the database, discord.py's sharding, each instance's share of Discord's budget,
the delivery leases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import delivery_timing, shard_options
from bot.config import ConfigError, Settings, load_settings
from bot.notifier import GLOBAL_SENDS_PER_SECOND


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def refused(tmp_path: Path, **values: str) -> str:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=str(env_file))
    return str(caught.value)


def test_without_database_url_the_sqlite_file_is_the_database() -> None:
    assert settings(DATABASE_PATH="/data/t.db").database == Path("/data/t.db")
    url = "postgresql://bot:pw@db:5432/tunewatch"
    assert settings(DATABASE_URL=url).database == url
    assert "pw" not in repr(settings(DATABASE_URL=url))  # a secret: never in a repr or a log


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://bot@db/tw", "must be a PostgreSQL URL"),
        ("tunewatch.db", "must be a PostgreSQL URL"),
        ("postgresql://bot:pw@db:port/tw", "is malformed"),
        ("postgresql:///tw", "names no host"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused(tmp_path: Path, url: str, words: str) -> None:
    message = refused(tmp_path, DATABASE_URL=url)
    assert "DATABASE_URL" in message
    assert words in message
    assert ":pw@" not in message


def test_no_sharding_by_default() -> None:
    plain = settings()
    assert shard_options(plain) == {}
    assert plain.gateway_share == 1.0


def test_one_shard_of_two_gets_half_of_discords_budget() -> None:
    one = settings(SHARD_COUNT=2, SHARD_IDS="1")
    assert shard_options(one) == {"shard_id": 1, "shard_count": 2}
    assert one.gateway_share == 0.5
    assert GLOBAL_SENDS_PER_SECOND * 0.5 * 2 < 50  # two such instances stay under the limit


def test_several_shards_in_one_instance() -> None:
    three = settings(SHARD_COUNT=4, SHARD_IDS=" 3, 1,2")
    assert three.shard_ids == [1, 2, 3]
    assert shard_options(three) == {"shard_ids": [1, 2, 3], "shard_count": 4}
    assert three.gateway_share == 0.75
    every = settings(SHARD_COUNT=4)
    assert shard_options(every) == {"shard_ids": None, "shard_count": 4}
    assert every.gateway_share == 1.0


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"SHARD_IDS": "0"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, "must be below SHARD_COUNT=2"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,0"}, "distinct"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "first"}, "shard numbers"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT"),
    ],
)
def test_shards_that_do_not_fit_are_refused(
    tmp_path: Path, values: dict[str, str], words: str
) -> None:
    assert words in refused(tmp_path, **values)


def test_delivery_leases_follow_the_poll_interval_on_a_shared_database() -> None:
    assert delivery_timing(settings(POLL_INTERVAL_SECONDS=60), shared=False) == {}
    assert delivery_timing(settings(POLL_INTERVAL_SECONDS=60), shared=True) == {
        "lease_seconds": 15.0,
        "idle_seconds": 15.0,
    }
    assert delivery_timing(settings(POLL_INTERVAL_SECONDS=1), shared=True) == {
        "lease_seconds": 2.0,
        "idle_seconds": 1.0,
    }
