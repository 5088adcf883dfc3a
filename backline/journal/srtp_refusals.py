"""Desk phones that refused the encrypted call they were rung with
(:mod:`backline.core.srtp_refusals`), kept across restarts: held only in memory, the warning
on the status page and in ``backline doctor`` would vanish with every restart until the phone
is rung again.  The phone's name only; nothing of the call."""

from __future__ import annotations

from backline.journal.store import SqlStore


class EncryptionRefusalJournal(SqlStore):
    """One row per desk phone whose last encrypted ring it refused."""

    def phones_refusing_encryption(self) -> list[str]:
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT desk_phone FROM encryption_refusals ORDER BY desk_phone")
            return [str(row[0]) for row in cur.fetchall()]

    def phone_refused_encryption(self, desk_phone: str) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("INSERT INTO encryption_refusals (desk_phone) VALUES (?) "
                                "ON CONFLICT (desk_phone) DO NOTHING"), (desk_phone,))

    def phone_took_encryption(self, desk_phone: str) -> None:
        """``desk_phone`` answered an encrypted call (or is no longer rung encrypted)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("DELETE FROM encryption_refusals WHERE desk_phone = ?"),
                        (desk_phone,))

    def forget_encryption_refusals(self) -> None:
        """A reload: each phone is judged again when next rung."""
        with self._lock, self._transaction() as cur:
            cur.execute("DELETE FROM encryption_refusals")
