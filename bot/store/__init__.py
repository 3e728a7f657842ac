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

__all__ = [
    "DEFAULT_KEY_REF",
    "TERMINAL_SEQ",
    "Delivery",
    "Event",
    "EventKind",
    "LimitReached",
    "Store",
    "Subscription",
    "SubscriptionKind",
    "SubscriptionStatus",
    "Training",
    "TrainingUpdate",
]
