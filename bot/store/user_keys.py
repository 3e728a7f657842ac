"""Per-user API keys as ciphertext: this repository never sees a key in clear."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.store.db import Database

Rewrite = Callable[[list[tuple[int, bytes]]], list[tuple[int, bytes]]]


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One user's encrypted key."""

    user_id: int
    ciphertext: bytes
    created_at: float | None
    updated_at: float | None


class UserKeys:
    """The ``user_keys`` table: one ciphertext per Discord user."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: int) -> StoredKey | None:
        """A user's encrypted key, or None."""
        rows = await self._db.fetch(
            "SELECT user_id, ciphertext, created_at, updated_at FROM user_keys WHERE user_id = ?",
            (user_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return StoredKey(int(row[0]), bytes(row[1]), row[2], row[3])

    async def put(self, user_id: int, ciphertext: bytes, *, now: float) -> None:
        """Store or replace a user's encrypted key."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO user_keys (user_id, ciphertext, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
                "ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                (user_id, ciphertext, now, now),
            )

    async def delete(self, user_id: int) -> bool:
        """Remove a user's key; True when there was one."""
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM user_keys WHERE user_id = ?", (user_id,)) > 0

    async def rewrite_all(self, rewrite: Rewrite, *, now: float) -> int:
        """Replace every ciphertext with what ``rewrite`` makes of them, all or nothing.

        ``rewrite`` gets every (user_id, ciphertext) and returns the new pairs; if it raises,
        the transaction rolls back and nothing changes. Returns how many rows were rewritten.
        """
        async with self._db.transaction() as tx:
            # Read inside the write transaction so no key set meanwhile escapes the rewrite.
            rows = await tx.fetch("SELECT user_id, ciphertext FROM user_keys ORDER BY user_id")
            new = rewrite([(int(r[0]), bytes(r[1])) for r in rows])
            await tx.executemany(
                "UPDATE user_keys SET ciphertext = ?, updated_at = ? WHERE user_id = ?",
                [(ciphertext, now, user_id) for user_id, ciphertext in new],
            )
            return len(new)
