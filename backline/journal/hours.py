"""The hours override: an admin forcing the practice closed or open until the next scheduled
change (backline.core.hours says whether it still holds)."""

from __future__ import annotations

from backline.core.hours import HoursOverride, HoursState
from backline.journal.rows import from_text, to_text
from backline.journal.store import SqlStore

# An override row that hands the hours back to the schedule (``backline hours auto``).
HOURS_AUTO = "auto"


class HoursJournal(SqlStore):
    """Each override, newest last."""

    def record_hours_override(self, override: HoursOverride) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("INSERT INTO hours_overrides (state, at, by_whom, via) "
                                "VALUES (?, ?, ?, ?)"),
                        (override.state.value if override.state else HOURS_AUTO,
                         to_text(override.at), override.by, override.via))

    def hours_override(self) -> HoursOverride | None:
        """The newest override (whether it still holds is the hours' to say), or None."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT state, at, by_whom, via FROM hours_overrides "
                        "ORDER BY id DESC LIMIT 1")
            row = cur.fetchone()
        if row is None:
            return None
        state = None if row[0] == HOURS_AUTO else HoursState(row[0])
        return HoursOverride(state, from_text(row[1]), row[2], row[3])
