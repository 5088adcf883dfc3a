"""Wrong outage PINs per desk phone (:mod:`backline.core.pin_lockout`), kept across restarts:
a lockout held only in memory would end whenever the controller restarts."""

from __future__ import annotations

from datetime import datetime

from backline.core.pin_lockout import PinJudgement, PinPolicy, PinRecord, judge_pin
from backline.journal.rows import Cursor, from_text, to_text
from backline.journal.store import SqlStore


class PinJournal(SqlStore):
    """One row per desk phone with wrong PINs since its last right one (none: a clean
    record)."""

    def pin_record(self, desk_phone: str) -> PinRecord:
        with self._lock, self._transaction() as cur:
            return self._pin_record(cur, desk_phone)

    def _pin_record(self, cur: Cursor, desk_phone: str) -> PinRecord:
        cur.execute(self._q("SELECT failures, locked_until FROM pin_records "
                            "WHERE desk_phone = ?"), (desk_phone,))
        row = cur.fetchone()
        if row is None:
            return PinRecord()
        return PinRecord(int(row[0]), from_text(row[1]) if row[1] else None)

    def judge_pin_try(self, desk_phone: str, pin_right: bool, now: datetime,
                      policy: PinPolicy) -> PinJudgement:
        """Judge one try and keep the desk phone's new record in one transaction, no other
        writer between the read and the write: controllers behind Kamailio share the journal,
        and a guesser's calls landing on two of them must not both count from the same record
        (lost updates would allow more wrong PINs than ``policy``)."""
        with self._lock, self._transaction() as cur:
            self._exclusive(cur, "pin_records")
            record = self._pin_record(cur, desk_phone)
            judged = judge_pin(record, pin_right, now, policy)
            if judged.record != record:
                self._save_pin_record(cur, desk_phone, judged.record)
            return judged

    def save_pin_record(self, desk_phone: str, record: PinRecord) -> None:
        """Keep ``record`` as the desk phone's; a clean one removes its row."""
        with self._lock, self._transaction() as cur:
            self._save_pin_record(cur, desk_phone, record)

    def _save_pin_record(self, cur: Cursor, desk_phone: str, record: PinRecord) -> None:
        if record == PinRecord():
            cur.execute(self._q("DELETE FROM pin_records WHERE desk_phone = ?"),
                        (desk_phone,))
            return
        until = to_text(record.locked_until) if record.locked_until else None
        cur.execute(self._q(
            "INSERT INTO pin_records (desk_phone, failures, locked_until) VALUES (?, ?, ?) "
            "ON CONFLICT (desk_phone) DO UPDATE SET failures = excluded.failures, "
            "locked_until = excluded.locked_until"),
            (desk_phone, record.failures, until))
