"""The backup (outage) mode: each switch, who made it, when, why and from where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.journal.rows import Cursor, from_text, to_text
from backline.journal.store import JournalError, SqlStore


class StaleMode(JournalError):
    """Someone switched the mode between our read and our write."""

    def __init__(self, now: ModeState) -> None:
        super().__init__(f"the mode changed meanwhile; it is now {now.mode.value}")
        self.now = now


class ModeJournal(SqlStore):
    """The mode's switches; the newest is the mode in force."""

    def record_mode_change(self, change: ModeChange, expected: ModeState | None = None) -> None:
        """Record a switch.  With ``expected``, refuse (``StaleMode``) if the mode moved since."""
        with self._lock, self._transaction() as cur:
            if expected is not None:
                self._exclusive(cur, "mode_changes")
                now = self._mode_state(cur)
                if now != expected:
                    raise StaleMode(now)
            cur.execute(self._q(
                "INSERT INTO mode_changes (mode, at, by_whom, via, reason) VALUES (?, ?, ?, ?, ?)"),
                (change.mode.value, to_text(change.at), change.by, change.via.value,
                 change.reason))

    def mode_state(self) -> ModeState:
        with self._lock, self._transaction() as cur:
            return self._mode_state(cur)

    def _mode_state(self, cur: Cursor) -> ModeState:
        cur.execute("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                    "ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return ModeState.initial()
        change = _change(row)
        return ModeState(change.mode, change)

    def mode_history(self, limit: int = 20) -> list[ModeChange]:
        """The latest switches, newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            return [_change(r) for r in cur.fetchall()]


def _change(row: Sequence[Any]) -> ModeChange:
    mode, at, by, via, reason = row
    return ModeChange(Mode(mode), from_text(at), by, Via(via), reason)
