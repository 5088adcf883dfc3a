"""The running controllers: each one's latest report (its node, when it was last seen, the
mode switch its PBX holds, and why the inbox cannot be reached, if it cannot)."""

from __future__ import annotations

from datetime import datetime

from backline.core.records import ControllerReport
from backline.journal.rows import from_text, to_text
from backline.journal.store import SqlStore


class ControllerJournal(SqlStore):
    """Controllers' reports, one row per holder."""

    def report_controller(self, report: ControllerReport, *,
                          forget_before: datetime | None = None) -> None:
        """Keep ``report`` as its holder's latest; drop rows not seen since
        ``forget_before`` (controllers that stopped without saying so)."""
        with self._lock, self._transaction() as cur:
            if forget_before is not None:
                cur.execute(self._q("DELETE FROM controllers WHERE seen_at < ?"),
                            (to_text(forget_before),))
            cur.execute(self._q(
                "INSERT INTO controllers (holder, node, seen_at, mode_switch, pbx_switch, "
                "pbx_at, inbox_blocked) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (holder) DO "
                "UPDATE SET node = excluded.node, seen_at = excluded.seen_at, "
                "mode_switch = excluded.mode_switch, pbx_switch = excluded.pbx_switch, "
                "pbx_at = excluded.pbx_at, inbox_blocked = excluded.inbox_blocked"),
                (report.holder, report.node, to_text(report.seen_at), report.mode_switch,
                 report.pbx_switch, to_text(report.pbx_at) if report.pbx_at else "",
                 report.inbox_blocked))

    def controllers(self) -> list[ControllerReport]:
        """Every controller's latest report, most recently seen first."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT holder, node, seen_at, mode_switch, pbx_switch, pbx_at, "
                        "inbox_blocked FROM controllers ORDER BY seen_at DESC")
            return [ControllerReport(holder, node, from_text(seen), mode, pbx,
                                     from_text(pbx_at) if pbx_at else None, blocked)
                    for holder, node, seen, mode, pbx, pbx_at, blocked in cur.fetchall()]

    def forget_controller(self, holder: str) -> None:
        """A controller stopping: it no longer counts as running."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("DELETE FROM controllers WHERE holder = ?"), (holder,))
