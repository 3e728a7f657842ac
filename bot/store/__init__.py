"""Persistence, the only package with SQL: the database and one repository per aggregate."""

from __future__ import annotations

from pathlib import Path

from bot.store.db import (
    Database,
    DatabaseError,
    DatabaseRefused,
    DatabaseUnreachable,
    MalformedDatabaseUrl,
    SchemaTooNew,
    is_postgres_url,
    masked_url,
)
from bot.store.models import (
    DEFAULT_KEY_REF,
    OPENING_SEQ,
    Delivery,
    Mention,
    MentionKind,
    MentionOn,
    Story,
    Style,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Training,
    TrainingUpdate,
)
from bot.store.outbox import Outbox
from bot.store.subscriptions import Following, LimitReached, Subscriptions
from bot.store.trainings import Trainings
from bot.store.user_keys import StoredKey, UserKeys


class Store:
    """The database and its repositories, opened and closed together."""

    def __init__(self, db: Database, *, owner: str | None = None) -> None:
        self.db = db
        self.outbox = Outbox(db, owner=owner)
        self.trainings = Trainings(db, self.outbox)
        self.subscriptions = Subscriptions(db)
        self.user_keys = UserKeys(db)

    @classmethod
    async def open(cls, target: str | Path, *, owner: str | None = None) -> Store:
        """Open (creating if needed) the database: a SQLite file, or a ``postgresql://`` URL.

        ``owner`` names this instance's delivery leases (default: unique to this process).
        Raises DatabaseError (or one of its kinds).
        """
        db = await Database.open(target)
        if not db.sql.shared:
            # One instance per SQLite file: leases found at start are its previous life's.
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM delivery_leases")
        return cls(db, owner=owner)

    @property
    def shared(self) -> bool:
        """True when other instances may use this database at the same time."""
        return self.db.sql.shared

    async def close(self) -> None:
        """Close the database."""
        await self.db.close()


__all__ = [
    "DEFAULT_KEY_REF",
    "OPENING_SEQ",
    "Database",
    "DatabaseError",
    "DatabaseRefused",
    "DatabaseUnreachable",
    "Delivery",
    "Following",
    "LimitReached",
    "MalformedDatabaseUrl",
    "Mention",
    "MentionKind",
    "MentionOn",
    "SchemaTooNew",
    "Store",
    "StoredKey",
    "Story",
    "Style",
    "Subscription",
    "SubscriptionKind",
    "SubscriptionStatus",
    "Training",
    "TrainingUpdate",
    "UserKeys",
    "is_postgres_url",
    "masked_url",
]
