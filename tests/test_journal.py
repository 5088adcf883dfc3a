"""The journal: what it acknowledges survives a SIGKILL, recording is idempotent, and the
mode and its history read back as written."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telephony.journal import (
    AttemptKind,
    AuditEntry,
    Delivery,
    JournalError,
    NewAttempt,
    Outcome,
    StaleMode,
    open_journal,
)
from telephony.journal.schema import LATEST
from telephony.outage import Mode, ModeChange, ModeState, Via

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def attempt(key: str, at: datetime = T0, **kw: object) -> NewAttempt:
    fields: dict[str, object] = dict(kind=AttemptKind.SMS, mode=Mode.OUTAGE,
                                     sender="+17205550141", recipient="+13125550100",
                                     outcome=Outcome.AUTO_REPLIED, text="refill please",
                                     delivery=Delivery.HELD)
    fields.update(kw)
    return NewAttempt(key, at, **fields)  # type: ignore[arg-type]


def test_attempts_round_trip_in_order_and_once(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path}/j.db")
    for i in range(5):
        _, new = journal.record_attempt(attempt(f"k{i}", T0 + timedelta(minutes=i)))
        assert new
    again, new = journal.record_attempt(attempt("k2", T0 + timedelta(hours=5), text="other"))
    assert not new and again.text == "refill please"  # the first record stands
    rows = journal.attempts()
    assert [a.key for a in rows] == ["k0", "k1", "k2", "k3", "k4"]
    assert rows[0].at == T0 and rows[0].delivery is Delivery.HELD
    assert [a.key for a in journal.attempts(since=T0 + timedelta(minutes=3))] == ["k3", "k4"]
    assert [a.key for a in journal.attempts(limit=2)] == ["k3", "k4"]


def test_mode_history_and_stale_switch(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path}/j.db")
    assert journal.mode_state() == ModeState.initial()
    engage = ModeChange(Mode.OUTAGE, T0, "ops", Via.CLI, "carrier down")
    journal.record_mode_change(engage, expected=ModeState.initial())
    assert journal.mode_state() == ModeState(Mode.OUTAGE, engage)
    with pytest.raises(StaleMode):  # someone else already switched it
        journal.record_mode_change(engage, expected=ModeState.initial())
    end = ModeChange(Mode.NORMAL, T0 + timedelta(hours=1), "ana", Via.CONSOLE, "")
    journal.record_mode_change(end)
    assert journal.mode_history() == [end, engage]


def test_audit_log(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path}/j.db")
    journal.audit(AuditEntry(T0, "cli:ops", "outage.engage", "reason given"))
    assert journal.audit_log() == [AuditEntry(T0, "cli:ops", "outage.engage", "reason given")]


def test_schema_is_versioned_and_a_newer_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    open_journal(f"sqlite://{path}").close()
    open_journal(f"sqlite://{path}").close()  # migrating twice is harmless
    db = sqlite3.connect(path)
    assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == LATEST
    db.execute("INSERT INTO schema_version VALUES (?)", (LATEST + 1,))
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer than this"):
        open_journal(f"sqlite://{path}")


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    open_journal(f"sqlite://{tmp_path}/j.db").close()
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sigkill_in_the_middle_of_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/j.db"
    writer = subprocess.Popen([sys.executable, "-m", "tests.journal_writer", url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    acked: list[str] = []
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked.append(line.split()[1])
            if len(acked) == 300:
                writer.send_signal(signal.SIGKILL)  # mid-stream: more writes are in flight
                break
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    journal = open_journal(url)
    stored = {a.key for a in journal.attempts(limit=1_000_000)}
    assert set(acked) <= stored
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
