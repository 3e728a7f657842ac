"""Persistence, the only package with SQL: the database and one repository per aggregate."""

from __future__ import annotations

from pathlib import Path

from bot.store.db import Database, DatabaseError, SchemaTooNew
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

    def __init__(self, db: Database) -> None:
        self.db = db
        self.outbox = Outbox(db)
        self.trainings = Trainings(db, self.outbox)
        self.subscriptions = Subscriptions(db)
        self.user_keys = UserKeys(db)

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database at ``path``; raises DatabaseError."""
        return cls(await Database.open(path))

    async def close(self) -> None:
        """Close the database."""
        await self.db.close()


__all__ = [
    "DEFAULT_KEY_REF",
    "OPENING_SEQ",
    "Database",
    "DatabaseError",
    "Delivery",
    "Following",
    "LimitReached",
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
]
