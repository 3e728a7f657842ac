"""deploy/compose.postgres.yaml: PostgreSQL and two tunewatch instances, one shard each."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.postgres.yaml"


def test_two_instances_share_one_postgres_database() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"postgres", "tunewatch-0", "tunewatch-1"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert "tunewatch-pg:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    shards = []
    for name in ("tunewatch-0", "tunewatch-1"):
        service = services[name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["restart"] == "unless-stopped"
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://tunewatch:")
        assert env["DATABASE_URL"].endswith("@postgres:5432/tunewatch")
        assert "DATABASE_PATH" not in env  # no SQLite volume: the database is PostgreSQL's
        # What each instance is set to parses as settings (the password filled in).
        url = re.sub(r"\$\{POSTGRES_PASSWORD[^}]*\}", "pw", env["DATABASE_URL"])
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            DATABASE_URL=url,
            SHARD_COUNT=env["SHARD_COUNT"],
            SHARD_IDS=env["SHARD_IDS"],
        )
        assert settings.gateway_share == 0.5
        shards += settings.shard_ids or []
    assert sorted(shards) == [0, 1]  # together they hold the whole gateway
