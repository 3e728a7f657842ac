"""Persistence: the only package with SQL."""

from bot.store.models import (
    DEFAULT_KEY_REF,
    TERMINAL_SEQ,
    Delivery,
    Event,
    EventKind,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Training,
    TrainingUpdate,
)
from bot.store.store import LimitReached, Store
from bot.store.user_keys import StoredKey, UserKeys

__all__ = [
    "DEFAULT_KEY_REF",
    "TERMINAL_SEQ",
    "Delivery",
    "Event",
    "EventKind",
    "LimitReached",
    "Store",
    "StoredKey",
    "Subscription",
    "SubscriptionKind",
    "SubscriptionStatus",
    "Training",
    "TrainingUpdate",
    "UserKeys",
]
