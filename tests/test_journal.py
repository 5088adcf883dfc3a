"""The journal, on both backends (SQLite and a real PostgreSQL): what it acknowledges survives a
SIGKILL, recording is idempotent, the mode and its history read back as written, and several
controllers writing one journal at once neither duplicate nor lose anything."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from backline.core.mode_sync import InEffect, NoController, NotYet, effect_of
from backline.core.outage import Mode, ModeChange, ModeState, Via, switch_key
from backline.core.pin_lockout import PinPolicy, PinRecord, PinVerdict
from backline.features.alerts.gather import GatherPolicy
from backline.journal import (
    AlertChannel,
    AttemptKind,
    AuditEntry,
    ControllerReport,
    Delivery,
    Journal,
    JournalError,
    NewAttempt,
    Outcome,
    StaleMode,
    open_journal,
    schema,
)
from backline.journal.postgres import _redacted
from backline.journal.replies import ReplyState
from backline.journal.schema import LATEST
from tests.harness.postgres import JournalBackend, PostgresServer, running_server

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
R = TypeVar("R")


def attempt(key: str, at: datetime = T0, **kw: object) -> NewAttempt:
    fields: dict[str, object] = dict(kind=AttemptKind.SMS, mode=Mode.OUTAGE,
                                     sender="+17205550141", recipient="+13125550100",
                                     outcome=Outcome.AUTO_REPLIED, text="refill please",
                                     delivery=Delivery.HELD)
    fields.update(kw)
    return NewAttempt(key, at, **fields)  # type: ignore[arg-type]


def together(n: int, work: Callable[[int], R]) -> list[R]:
    """Run ``work(0..n-1)`` in n threads released at the same instant; re-raise a failure."""
    barrier = threading.Barrier(n)
    results: list[R | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def test_attempts_round_trip_in_order_and_once(journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    for i in range(5):
        _, new = journal.record_attempt(attempt(f"k{i}", T0 + timedelta(minutes=i), node="n1"))
        assert new
    again, new = journal.record_attempt(attempt("k2", T0 + timedelta(hours=5), text="other"))
    assert not new and again.text == "refill please"  # the first record stands
    rows = journal.attempts()
    assert [a.key for a in rows] == ["k0", "k1", "k2", "k3", "k4"]
    assert rows[0].at == T0 and rows[0].delivery is Delivery.HELD and rows[0].node == "n1"
    assert [a.key for a in journal.attempts(since=T0 + timedelta(minutes=3))] == ["k3", "k4"]
    assert [a.key for a in journal.attempts(limit=2)] == ["k3", "k4"]
    assert journal.attempt("k1") == rows[1] and journal.attempt("nope") is None
    assert journal.held() == {"sms": 5}
    journal.close()


def test_outside_parties_are_filed_in_e164_with_what_came_beside(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    call, new = journal.record_attempt(attempt("call:1", kind=AttemptKind.CALL,
                                               sender="7205550141", outcome=Outcome.ANNOUNCED))
    assert new and (call.sender, call.sender_raw) == ("+17205550141", "7205550141")
    # An SMS made E.164 by the webhook brings what the gateway sent.
    sms, _ = journal.record_attempt(attempt("sms:1", sender="+17205550141",
                                            sender_raw="17205550141"))
    assert (sms.sender, sms.sender_raw) == ("+17205550141", "17205550141")
    hidden, _ = journal.record_attempt(attempt("call:2", kind=AttemptKind.CALL,
                                               sender="anonymous", outcome=Outcome.ANNOUNCED))
    assert (hidden.sender, hidden.sender_raw) == ("anonymous", "anonymous")
    # Read back the same way, also by the inbox queue.
    assert journal.attempts() == [call, sms, hidden]
    journal.enqueue_held()
    items = journal.item_of_attempts([call.id, sms.id])
    assert [items[i].attempt for i in (call.id, sms.id)] == [call, sms]
    journal.close()


def test_the_migration_files_earlier_senders_in_e164_and_keeps_them_as_they_came(
        journal_backend: JournalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = next(i for i, m in enumerate(schema.MIGRATIONS) if any("sender_raw" in s for s in m))
    with monkeypatch.context() as before:  # a journal made by the Backline before it
        before.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:mine])
        before.setattr(schema, "LATEST", mine)
        open_journal(journal_backend.url).close()
    senders = ["7205550141", "17205550141", "+17205550141", "1205550141", "27205550141",
               "720555014x", "anonymous", ""]
    for i, sender in enumerate(senders):
        journal_backend.execute(
            "INSERT INTO attempts (key, at, kind, mode, sender, recipient, outcome, delivery) "
            "VALUES (?, ?, 'call', 'outage', ?, '+13125550100', 'announced', 'held')",
            (f"call:{i}", "2026-11-23T08:00:00.000000Z", sender))
    journal = open_journal(journal_backend.url)
    assert [(a.sender, a.sender_raw) for a in journal.attempts()] == [
        ("+17205550141", "7205550141"), ("+17205550141", "17205550141"),
        ("+17205550141", "+17205550141"), ("1205550141", "1205550141"),
        ("27205550141", "27205550141"), ("720555014x", "720555014x"),
        ("anonymous", "anonymous"), ("", "")]
    journal.close()


def test_a_fax_record_is_corrected_once_and_only_from_what_it_said(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    journal.record_attempt(attempt("fax:1.1", kind=AttemptKind.FAX, outcome=Outcome.UNREADABLE,
                                   text="", detail="no page received"))
    journal.record_attempt(attempt("sms:1", outcome=Outcome.UNREADABLE))
    fixed = journal.correct_fax("fax:1.1", Outcome.UNREADABLE, Outcome.RECEIVED, "/f/1.pdf",
                                "1 page")
    assert fixed is not None and (fixed.outcome, fixed.file, fixed.detail) == (
        Outcome.RECEIVED, "/f/1.pdf", "1 page")
    assert fixed.delivery is Delivery.HELD and fixed.at == T0  # the rest as it was
    assert journal.attempt("fax:1.1") == fixed
    # A second controller correcting the same fax, or a key that is not a fax: nothing.
    assert journal.correct_fax("fax:1.1", Outcome.UNREADABLE, Outcome.RECEIVED, "/x", "") is None
    assert journal.correct_fax("sms:1", Outcome.UNREADABLE, Outcome.RECEIVED, "/x", "") is None
    assert journal.attempt("fax:1.1") == fixed
    journal.close()


def test_mode_history_and_stale_switch(journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    assert journal.mode_state() == ModeState.initial()
    engage = ModeChange(Mode.OUTAGE, T0, "ops", Via.CLI, "carrier down")
    journal.record_mode_change(engage, expected=ModeState.initial())
    assert journal.mode_state() == ModeState(Mode.OUTAGE, engage)
    with pytest.raises(StaleMode):  # someone else already switched it
        journal.record_mode_change(engage, expected=ModeState.initial())
    end = ModeChange(Mode.NORMAL, T0 + timedelta(hours=1), "ana", Via.CONSOLE, "")
    journal.record_mode_change(end)
    assert journal.mode_history() == [end, engage]
    journal.close()


def test_controllers_report_what_their_pbx_holds_and_are_forgotten(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    key = switch_key(ModeChange(Mode.OUTAGE, T0, "ops", Via.CLI, "drill"))
    a = ControllerReport("host:1:aa", "node-a", T0, key, "", None, "")
    b = ControllerReport("host:2:bb", "node-b", T0 + timedelta(seconds=1), key, key,
                         T0 + timedelta(seconds=1), "the controller has no inbox token")
    journal.report_controller(a)
    journal.report_controller(b)
    assert journal.controllers() == [b, a]  # most recently seen first
    now = T0 + timedelta(seconds=20)
    assert effect_of(journal.controllers(), key, now, timedelta(seconds=30)) == \
        NotYet((("node-a", T0),))
    a2 = ControllerReport("host:1:aa", "node-a", now, key, key, now, "")
    journal.report_controller(a2)  # the same holder: its row, rewritten
    assert effect_of(journal.controllers(), key, now, timedelta(seconds=30)) == InEffect(
        (("node-a", now), ("node-b", T0 + timedelta(seconds=1))))
    assert effect_of(journal.controllers(), key, now + timedelta(minutes=5),
                     timedelta(seconds=30)) == NoController(now)
    journal.forget_controller("host:1:aa")
    assert journal.controllers() == [b]
    journal.report_controller(a2, forget_before=T0 + timedelta(seconds=5))  # b is stale
    assert journal.controllers() == [a2]
    journal.close()


def test_audit_log(journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    journal.audit(AuditEntry(T0, "cli:ops", "outage.engage", "reason given"))
    assert journal.audit_log() == [AuditEntry(T0, "cli:ops", "outage.engage", "reason given")]
    journal.close()


def test_pin_records_are_kept_per_desk_phone_and_a_clean_one_removed(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    assert journal.pin_record("ana-desk") == PinRecord()
    journal.save_pin_record("ana-desk", PinRecord(2))
    locked = PinRecord(3, T0 + timedelta(seconds=30))
    journal.save_pin_record("ana-desk", locked)  # the same desk phone: its row, rewritten
    journal.save_pin_record("raj-desk", PinRecord(1))
    journal.close()
    journal = open_journal(journal_backend.url)  # as after a restart
    assert journal.pin_record("ana-desk") == locked
    assert journal.pin_record("raj-desk") == PinRecord(1)
    journal.save_pin_record("raj-desk", PinRecord())
    assert journal.pin_record("raj-desk") == PinRecord()
    assert journal_backend.execute("SELECT desk_phone FROM pin_records") == [("ana-desk",)]
    journal.close()


def test_wrong_pins_from_controllers_sharing_the_journal_never_exceed_the_policy(
        journal_backend: JournalBackend) -> None:
    """A guesser's calls land on several controllers (behind Kamailio) sharing one journal:
    each judges its tries on its own connection, and no try is counted from a stale record,
    so the wrong PINs judged before the lockout are exactly the policy's free tries."""
    policy = PinPolicy(free_tries=40)
    journals = [open_journal(journal_backend.url) for _ in range(4)]

    def guess(i: int) -> list[PinVerdict]:
        return [journals[i].judge_pin_try("ana-desk", False, T0, policy).verdict
                for _ in range(30)]

    verdicts = [v for tries in together(4, guess) for v in tries]
    assert verdicts.count(PinVerdict.WRONG) == policy.free_tries
    assert verdicts.count(PinVerdict.LOCKED_OUT) == 4 * 30 - policy.free_tries
    assert journals[0].pin_record("ana-desk").failures == policy.free_tries
    for journal in journals:
        journal.close()


def test_schema_is_versioned_and_a_newer_journal_is_refused(
        journal_backend: JournalBackend) -> None:
    open_journal(journal_backend.url).close()
    open_journal(journal_backend.url).close()  # migrating twice is harmless
    assert journal_backend.execute("SELECT MAX(version), COUNT(*) FROM schema_version") == [
        (LATEST, LATEST)]
    journal_backend.execute("INSERT INTO schema_version VALUES (?)", (LATEST + 1,))
    with pytest.raises(JournalError, match="newer than this"):
        open_journal(journal_backend.url)


def test_controllers_starting_together_migrate_once(journal_backend: JournalBackend) -> None:
    journals = together(4, lambda _: open_journal(journal_backend.url))
    for j in journals:
        j.close()
    assert journal_backend.execute("SELECT version, COUNT(*) FROM schema_version "
                                   "GROUP BY version ORDER BY version") == [
        (v, 1) for v in range(1, LATEST + 1)]


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    open_journal(f"sqlite://{tmp_path}/j.db").close()
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _kill_writer_midstream(url: str, acks: int) -> list[str]:
    """Start tests.journal_writer on ``url``, SIGKILL it after ``acks`` acknowledgements."""
    writer = subprocess.Popen([sys.executable, "-m", "tests.journal_writer", url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    acked: list[str] = []
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked.append(line.split()[1])
            if len(acked) == acks:
                writer.send_signal(signal.SIGKILL)  # mid-stream: more writes are in flight
                break
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    return acked


def test_sigkill_in_the_middle_of_writes_loses_nothing_acknowledged(
        journal_backend: JournalBackend) -> None:
    url = journal_backend.url
    acked = _kill_writer_midstream(url, 300)
    journal = open_journal(url)
    stored = {a.key for a in journal.attempts(limit=1_000_000)}
    assert set(acked) <= stored
    if journal_backend.sqlite_path is not None:
        assert journal_backend.execute("PRAGMA integrity_check") == [("ok",)]


def test_two_controllers_recording_the_same_calls_store_each_once(
        journal_backend: JournalBackend) -> None:
    """The PBX may tell two controllers (or a retry) about one call: one row, one "new"."""
    journals = [open_journal(journal_backend.url) for _ in range(2)]
    keys = [f"call-{i}" for i in range(150)]

    def record_all(i: int) -> int:
        return sum(journals[i].record_attempt(attempt(k))[1] for k in keys)

    news = together(2, record_all)
    assert sum(news) == len(keys)
    assert journal_backend.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM attempts") == [
        (len(keys), len(keys))]
    for j in journals:
        j.close()


def test_two_controllers_engaging_at_once_switch_once(journal_backend: JournalBackend) -> None:
    journals = [open_journal(journal_backend.url) for _ in range(2)]
    for round_ in range(10):
        state = journals[0].mode_state()
        target = Mode.NORMAL if state.mode is Mode.OUTAGE else Mode.OUTAGE
        change = ModeChange(target, T0 + timedelta(minutes=round_), "ops", Via.CLI, "")

        def switch(i: int, state: ModeState = state, change: ModeChange = change) -> bool:
            try:
                journals[i].record_mode_change(change, expected=state)
                return True
            except StaleMode:
                return False

        assert sorted(together(2, switch)) == [False, True]
    assert len(journals[1].mode_history(limit=100)) == 10
    for j in journals:
        j.close()


P = GatherPolicy(first_window=10, max_window=60)


def test_two_controllers_gather_and_claim_alerts_without_overlap(
        journal_backend: JournalBackend) -> None:
    """Each attempt is listed on one alert, and each due delivery is sent by one controller."""
    journals = [open_journal(journal_backend.url) for _ in range(2)]
    ids = [journals[0].record_attempt(attempt(f"k{i}", kind=AttemptKind.CALL,
                                              outcome=Outcome.ANNOUNCED))[0].id
           for i in range(60)]
    recipients = [(AlertChannel.EMAIL, "ops@maple.example"), (AlertChannel.SMS, "+13125550199")]
    serial = iter(range(10_000))
    lock = threading.Lock()

    def message_id() -> str:
        with lock:
            return f"<{next(serial)}@maple.example>"

    # Both see every attempt (as after a restart's catch-up), in opposite orders.
    listed = together(2, lambda i: journals[i].gather(ids if i == 0 else ids[::-1], T0,
                                                      P.place, recipients, message_id))
    assert sum(listed) == len(ids)
    rows = journal_backend.execute("SELECT COUNT(*), COUNT(DISTINCT attempt_id) "
                                   "FROM alert_attempts")
    assert rows == [(len(ids), len(ids))]
    # As if one controller had gathered them: the first alerted at once, the rest gathered
    # for the window's end; not an alert opened by each controller.
    per_alert = journal_backend.execute("SELECT alert_id, COUNT(*) FROM alert_attempts "
                                        "GROUP BY alert_id ORDER BY alert_id")
    assert [n for _, n in per_alert] == [1, len(ids) - 1]
    deliveries = journals[0].alert_deliveries()
    assert len(deliveries) == 2 * len(recipients)
    later = T0 + timedelta(hours=1)
    claimed = together(2, lambda i: journals[i].claim_due_deliveries(
        later, later + timedelta(minutes=2)))
    claimed_ids = [d.id for batch in claimed for d in batch]
    assert sorted(claimed_ids) == sorted(d.id for d in deliveries)  # each once, none lost
    for j in journals:
        j.close()


def test_alert_journal_lists_once_and_leases_to_one_sender(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    ids = [journal.record_attempt(attempt(f"k{i}", kind=AttemptKind.CALL,
                                          outcome=Outcome.ANNOUNCED))[0].id for i in range(3)]
    recipients = [(AlertChannel.EMAIL, "ops@maple.example")]
    serial = iter(range(100))
    assert journal.gather(ids, T0, P.place, recipients, lambda: f"<{next(serial)}@x>") == 3
    assert journal.gather(ids, T0, P.place, recipients, lambda: f"<{next(serial)}@x>") == 0
    assert journal.unalerted_attempts(T0) == []
    by_alert = [len(journal.alert_attempts(d.alert_id)) for d in journal.alert_deliveries()]
    assert sorted(by_alert) == [1, 2]
    first = journal.claim_due_deliveries(T0, T0 + timedelta(seconds=120))
    assert len(first) == 1
    assert journal.claim_due_deliveries(T0, T0 + timedelta(seconds=120)) == []  # leased
    link = journal.add_alert_link(first[0].id, "ab" * 32, T0, T0 + timedelta(hours=12))
    found = journal.alert_link("ab" * 32)
    assert found is not None and found.id == link and found.alert_id == first[0].alert_id
    journal.delivery_sent(first[0].id, T0 + timedelta(seconds=1))
    assert journal.alert_backlog() == 1
    journal.close()


def test_sms_replies_are_leased_to_one_sender_retried_and_settled_once(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    engage = ModeChange(Mode.OUTAGE, T0 - timedelta(minutes=1), "ops", Via.CLI, "drill")
    journal.record_mode_change(engage)
    practice, patient = "+13125550100", "+17205550141"
    a, b, c, d = (journal.record_attempt(attempt(f"sms{i}", outcome=Outcome.RECEIVED))[0]
                  for i in range(4))
    assert journal.add_sms_reply(a.id, practice, patient, T0)
    assert not journal.add_sms_reply(a.id, practice, patient, T0)  # the webhook posted again
    assert journal.add_sms_reply(b.id, practice, patient, T0, not_sent="not registered")
    lease = T0 + timedelta(seconds=120)
    [claimed] = journal.claim_due_replies(T0, lease)  # b is final: never claimed
    assert (claimed.attempt_id, claimed.sender, claimed.recipient) == (a.id, practice, patient)
    assert journal.claim_due_replies(T0 + timedelta(seconds=1), lease) == []  # leased
    journal.reply_failed(claimed.id, T0 + timedelta(seconds=5), "HTTP 503")
    assert journal.claim_due_replies(T0 + timedelta(seconds=1), lease) == []  # not yet due
    assert journal.next_reply_at() == T0 + timedelta(seconds=5)
    [again] = journal.claim_due_replies(T0 + timedelta(seconds=5), lease)
    assert (again.state, again.tries, again.detail) == (ReplyState.FAILED, 1, "HTTP 503")
    journal.reply_sent(again.id, T0 + timedelta(seconds=6), "SM" + "0" * 32)
    assert journal.claim_due_replies(T0 + timedelta(days=1), T0 + timedelta(days=2)) == []
    a_now = journal.attempt("sms0")
    assert a_now is not None and a_now.outcome is Outcome.AUTO_REPLIED  # in the same commit
    replies = journal.replies_of_attempts([a.id, b.id, c.id])
    assert (replies[a.id].state, replies[a.id].tries, replies[a.id].detail) == (
        ReplyState.SENT, 2, "")
    assert (replies[b.id].state, replies[b.id].detail) == (ReplyState.NOT_SENT, "not registered")
    assert c.id not in replies
    assert [x.key for x in journal.sms_without_reply(T0 - timedelta(hours=1))] == [
        "sms2", "sms3"]

    # A dead sender's lease lapses; after the outage an open reply is closed, except one being
    # tried right then, which its try settles.
    journal.add_sms_reply(c.id, practice, patient, T0)
    journal.add_sms_reply(d.id, practice, patient, T0)
    later = T0 + timedelta(hours=1)
    assert len(journal.claim_due_replies(later, later + timedelta(seconds=120))) == 2
    lapsed = later + timedelta(seconds=121)
    [c_reply, d_reply] = journal.claim_due_replies(lapsed, lapsed + timedelta(seconds=120))
    assert d_reply.attempt_id == d.id  # claimed again: its sender died mid-try
    journal.reply_failed(c_reply.id, lapsed + timedelta(seconds=5), "cannot connect")
    assert journal.close_open_replies(lapsed, "the outage ended") == 0  # still engaged
    assert not journal.replies_of_attempts([c.id])[c.id].state.final
    journal.record_mode_change(ModeChange(Mode.NORMAL, T0 + timedelta(minutes=1), "ops",
                                          Via.CLI, ""))
    assert journal.close_open_replies(lapsed, "the outage ended") == 1  # c; d is in the air
    open_d = journal.final_reply(d.id, lapsed, "the outage ended")
    assert open_d is not None and not open_d.state.final
    closed_d = journal.final_reply(d.id, lapsed + timedelta(seconds=121), "the outage ended")
    assert closed_d is not None and closed_d.state is ReplyState.NOT_SENT
    final = journal.replies_of_attempts([c.id])[c.id]
    assert (final.state, final.detail) == (
        ReplyState.NOT_SENT, "the outage ended (last try: cannot connect)")
    assert journal.final_reply(b.id, lapsed, "x") == replies[b.id]  # final stays as it was
    # An SMS of an outage engaged since (a controller that has not seen it yet closes
    # nothing): its reply is left to be sent.
    journal.record_mode_change(ModeChange(Mode.OUTAGE, later + timedelta(hours=2), "ops",
                                          Via.CLI, "again"))
    e, _ = journal.record_attempt(attempt("sms-e", later + timedelta(hours=2, seconds=1),
                                          outcome=Outcome.RECEIVED))
    journal.add_sms_reply(e.id, practice, patient, later)
    assert journal.close_open_replies(later + timedelta(hours=3), "the outage ended") == 0
    open_e = journal.final_reply(e.id, later + timedelta(hours=3), "the outage ended")
    assert open_e is not None and open_e.state is ReplyState.PENDING
    journal.close()


def test_two_controllers_claim_each_sms_reply_once(journal_backend: JournalBackend) -> None:
    journals = [open_journal(journal_backend.url) for _ in range(2)]
    for i in range(40):
        a, _ = journals[0].record_attempt(attempt(f"sms{i}", outcome=Outcome.RECEIVED))
        journals[0].add_sms_reply(a.id, "+13125550100", f"+1720555{i:04d}", T0)
    claimed = together(2, lambda i: journals[i].claim_due_replies(
        T0, T0 + timedelta(minutes=2)))
    ids = [r.id for batch in claimed for r in batch]
    assert len(ids) == len(set(ids)) == 40  # each once, none lost
    for j in journals:
        j.close()


# -- PostgreSQL only -----------------------------------------------------------------------


def test_postgres_commits_are_durable_even_where_the_server_defaults_to_async() -> None:
    """SIGKILL the whole PostgreSQL server mid-stream.  Its default here is asynchronous commit
    with a 10 s WAL writer delay, so an acknowledged commit that relied on the server's
    default would be lost with the server's buffers; the journal turns synchronous commit on
    for its own session, so every acknowledged attempt is there after crash recovery."""
    with running_server(settings={"synchronous_commit": "off",
                                  "wal_writer_delay": "10000ms"}) as server, \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSFILE", str(server.passfile))
        url = server.new_database("crash")
        acked: list[str] = []
        done = threading.Event()

        def write() -> None:
            journal = open_journal(url)
            i = 0
            try:
                while True:
                    journal.record_attempt(attempt(f"call-{i}", node="n1"))
                    acked.append(f"call-{i}")
                    if i == 200:
                        done.set()
                    i += 1
            except JournalError:
                return  # the server died under us; nothing after this was acknowledged

        writer = threading.Thread(target=write)
        writer.start()
        assert done.wait(timeout=60)
        server.crash()
        writer.join(timeout=60)
        server.start()  # crash recovery replays the WAL
        journal = open_journal(url)
        stored = {a.key for a in journal.attempts(limit=1_000_000)}
        journal.close()
    assert len(acked) > 200
    assert set(acked) <= stored


def test_postgres_reconnects_after_a_server_restart() -> None:
    with running_server() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSFILE", str(server.passfile))
        journal = open_journal(server.new_database("restart"))
        journal.record_attempt(attempt("before"))
        port = server.port
        server.stop()
        server.start()
        assert server.port == port  # the journal's URL still names it
        # The first call after the restart finds the old connection dead at BEGIN, before
        # anything of it ran: it reconnects and succeeds, nothing is lost or doubled.
        assert journal.record_attempt(attempt("after"))
        assert [a.key for a in journal.attempts()] == ["before", "after"]
        journal.close()


def test_postgres_a_statement_stuck_behind_a_lock_fails_instead_of_hanging(
        postgres_server: PostgresServer) -> None:
    """lock_timeout (and statement_timeout) bound a journal call: a stuck one fails as the
    journal failing, which callers handle, instead of holding every other call behind it."""
    url = postgres_server.new_database("lock_timeout")
    journal = open_journal(url)
    journal.record_attempt(attempt("first"))
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(JournalError, match="lock timeout"):
            journal.record_attempt(attempt("blocked"))
    # What ended the wait is the server's own timer ("lock timeout" is Postgres's error),
    # set on the journal's session: shown by that, not timed on this test's clock, which a
    # loaded machine stretches (a hang is pytest-timeout's to catch).
    params = journal._conn.info.get_parameters()  # type: ignore[attr-defined]
    assert "-c lock_timeout=5s" in params["options"], params
    assert journal.record_attempt(attempt("blocked"))  # the lock gone, it goes through
    # The connection also carries TCP keepalives and a user timeout for a silent drop.
    assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == (
        "1", "5", "10000")
    journal.close()


def test_postgres_a_password_in_the_url_query_never_reaches_an_error() -> None:
    redacted = _redacted("postgresql://backline@db:5432/backline?password=hunter2"
                         "&sslmode=require")
    assert "hunter2" not in redacted and "password" not in redacted
    assert redacted == "postgresql://backline@db:5432/backline?sslmode=require"
    assert "pw" not in _redacted("postgresql://backline:pw@db/backline")
    assert "hunter2" not in _redacted("postgresql://backline@db/x?password=hunter2&bogus=1")


def test_the_test_server_moves_to_another_port_when_its_port_was_taken() -> None:
    """Harness: the port picked before initdb may be taken by another xdist worker by the
    time postgres binds it; the server then starts on a fresh port, with a passfile to match."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="backline-pg-")))
    try:
        server.init()
        taken = server.port
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            server.start()
        assert server.port != taken
        assert f"127.0.0.1:{server.port}:" in server.passfile.read_text()
        server.create_role()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PGPASSFILE", str(server.passfile))
            journal = open_journal(server.new_database("moved"))
            assert journal.mode_state() == ModeState.initial()
            journal.close()
    finally:
        server.stop()
        server.cleanup()


def test_postgres_password_comes_from_the_environment(
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_server.new_database("password")
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(JournalError, match="cannot open the journal at postgresql://backline@"):
        open_journal(url)
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(JournalError, match="password authentication failed"):
        open_journal(url)
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    journal: Journal = open_journal(url)
    assert journal.mode_state() == ModeState.initial()
    journal.close()


def test_postgres_error_messages_never_show_a_password(
        postgres_server: PostgresServer) -> None:
    with pytest.raises(JournalError) as caught:
        open_journal(f"postgresql://backline:s3cret-word@127.0.0.1:{postgres_server.port}/nodb")
    assert "s3cret-word" not in str(caught.value)
    assert "postgresql://backline@127.0.0.1" in str(caught.value)
