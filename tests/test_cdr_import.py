"""Asterisk's CDR rows become the attempts the controller would have journaled: a call the
PBX answered alone is an announced, held attempt; a call the controller decided (and died
before journaling) keeps what actually happened to it."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backline.app import config
from backline.core import voicemail as vm
from backline.core.outage import Mode
from backline.journal import Delivery, Outcome, open_journal
from backline.pbx.asterisk import cdr


def master_csv(context: str, last_app: str, uniqueid: str = "1764300000.42") -> str:
    """One row as cdr_csv writes it (loguniqueid, loguserfield)."""
    row = dict.fromkeys(cdr.COLUMNS, "")
    row.update(src="+17205550141", dst="+13125550101", dcontext=context,
               clid='"Caller" <+17205550141>', channel="PJSIP/carrier-00000001",
               lastapp=last_app, start="2026-11-28 03:00:00", answer="2026-11-28 03:00:01",
               end="2026-11-28 03:00:09", duration="9", billsec="8", disposition="ANSWERED",
               amaflags="DOCUMENTATION", uniqueid=uniqueid, userfield="+13125550101")
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerow([row[c] for c in cdr.COLUMNS])
    return out.getvalue()


@pytest.mark.parametrize(("context", "app", "mode", "outcome", "delivery"), [
    ("backline-ring", "Dial", Mode.NORMAL, Outcome.RANG, Delivery.NOT_NEEDED),
    ("backline-voicemail", "VoiceMail", Mode.NORMAL, Outcome.VOICEMAIL, Delivery.NOT_NEEDED),
    ("backline-unknown", "Playback", Mode.NORMAL, Outcome.REFUSED, Delivery.NOT_NEEDED),
    ("backline-unknown", "Playback", Mode.OUTAGE, Outcome.REFUSED, Delivery.NOT_NEEDED),
    ("backline-announce", "Playback", Mode.OUTAGE, Outcome.ANNOUNCED, Delivery.HELD),
])
def test_each_row_keeps_what_happened_to_the_call(context: str, app: str, mode: Mode,
                                                  outcome: Outcome, delivery: Delivery) -> None:
    [row] = cdr.parse(master_csv(context, app))
    attempt = cdr.attempt_for(row, lambda at: mode)
    assert attempt.key == "call:1764300000.42"  # the key the controller uses when it is up
    assert attempt.outcome is outcome
    assert attempt.delivery is delivery
    assert attempt.at == datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    assert (attempt.sender, attempt.recipient) == ("+17205550141", "+13125550101")


def test_rows_without_the_dialled_number_or_malformed_are_skipped() -> None:
    good = master_csv("backline-ring", "Dial")
    no_userfield = good.replace('"+13125550101"\r\n', '""\r\n')
    assert len(list(cdr.parse(good))) == 1
    assert list(cdr.parse(no_userfield)) == []
    assert list(cdr.parse('"just","three","fields"\n')) == []


def desk_row(dialled: str, uniqueid: str) -> str:
    """A desk phone's call as cdr_csv writes it: no userfield (nothing marks a 911)."""
    row = dict.fromkeys(cdr.COLUMNS, "")
    row.update(src="102", dst=dialled, dcontext="backline-desk", channel="PJSIP/raj-desk-0000002a",
               lastapp="Dial", start="2026-11-28 03:00:00", uniqueid=uniqueid)
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerow([row[c] for c in cdr.COLUMNS])
    return out.getvalue()


def test_a_desk_phones_911_is_found_by_its_context_and_number_and_is_no_carrier_call() -> None:
    # The dialplan's 911 is Dial() alone; its row ends in the desk context at the number.
    text = desk_row("911", "1764300000.7") + desk_row("933", "1764300000.8") \
        + desk_row("101", "1764300000.9") + master_csv("backline-ring", "Dial")
    calls = list(cdr.emergency_calls(text, ("911", "933")))
    assert [(c.key, c.desk_phone, c.dialled) for c in calls] == [
        ("emergency:1764300000.7", "raj-desk", "911"),
        ("emergency:1764300000.8", "raj-desk", "933")]
    assert [c.dialled for c in cdr.emergency_calls(text, ("911",))] == ["911"]
    assert [row.context for row in cdr.parse(text)] == ["backline-ring"]


def test_shared_fax_contexts_are_the_asterisk_dialplans() -> None:
    # pbx/ports.py spells them out so that it imports no driver; the dialplan derives them.
    from backline.pbx import ports
    from backline.pbx.asterisk import dialplan_variables as v

    assert f"backline-{v.FAX}" == ports.RECEIVE_CONTEXT
    assert f"backline-{v.REJECT_FAX}" == ports.REJECT_CONTEXT


def cdr_row(context: str, app: str, disposition: str, start: str, end: str,
            uniqueid: str = "1764300000.42", userfield: str = "+13125550101") -> str:
    row = {**dict(csv.DictReader(io.StringIO(master_csv(context, app, uniqueid)),
                                 fieldnames=cdr.COLUMNS).__next__()),
           "disposition": disposition, "start": start, "end": end, "userfield": userfield}
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerow([row[c] for c in cdr.COLUMNS])
    return out.getvalue()


RANG = cdr_row("backline-ring", "Dial", "NO ANSWER", "2026-11-28 03:00:00", "2026-11-28 03:00:09")
TOOK = cdr_row("backline-ring", "Dial", "ANSWERED", "2026-11-28 03:00:00", "2026-11-28 03:00:40")
GREETING = cdr_row("backline-voicemail", "Playback", "ANSWERED", "2026-11-28 03:00:10",
                   "2026-11-28 03:00:14")
RECORDING = cdr_row("backline-voicemail", "VoiceMail", "ANSWERED", "2026-11-28 03:00:10",
                    "2026-11-28 03:00:30")
# The voicemail's h extension marks a call app_voicemail kept no message of (hung up at the
# beep): backline.render.asterisk_dialplan.
KEPT_NONE = cdr_row("backline-voicemail", "VoiceMail", "ANSWERED", "2026-11-28 03:00:10",
                    "2026-11-28 03:00:30", userfield="+13125550101/no-message")
AT = datetime(2026, 11, 28, 3, 0, 12, tzinfo=UTC)  # within GREETING's and RECORDING's call
CHANNEL = "PJSIP/carrier-00000001"


@pytest.mark.parametrize(("rows", "messages", "missed_at"), [
    # The caller hung up while the desk phones rang (a desk phone that did not answer).
    (RANG, [], datetime(2026, 11, 28, 3, 0, 9, tzinfo=UTC)),
    # A desk phone took it (another rang on, unanswered): not missed.
    (RANG + TOOK, [], None),
    # The phones rang out, the caller hung up in the greeting: missed, when it ended.
    (RANG + GREETING, [], datetime(2026, 11, 28, 3, 0, 14, tzinfo=UTC)),
    # A message of the call known to the spool or the journal: not missed.
    (GREETING, [vm.LeftMessage("+13125550101", AT, CHANNEL)], None),
    (GREETING, [vm.LeftMessage("+13125550101", AT)], None),
    # Another number's message, or one left on another channel or after the call: missed.
    (GREETING, [vm.LeftMessage("+13125550102", AT, CHANNEL),
                vm.LeftMessage("+13125550101", AT, "PJSIP/carrier-00000007"),
                vm.LeftMessage("+13125550101", AT.replace(minute=5))],
     datetime(2026, 11, 28, 3, 0, 14, tzinfo=UTC)),
    # It reached the recording and no message is known: one may have been left and deleted
    # since; in doubt, nothing.
    (RECORDING, [], None),
    # Unless the PBX marked that it kept none: missed, when it ended; still nothing if a
    # message of the call is known all the same.
    (KEPT_NONE, [], datetime(2026, 11, 28, 3, 0, 30, tzinfo=UTC)),
    (RANG + KEPT_NONE, [], datetime(2026, 11, 28, 3, 0, 30, tzinfo=UTC)),
    (KEPT_NONE, [vm.LeftMessage("+13125550101", AT, CHANNEL)], None),
])
def test_a_call_that_rang_or_reached_voicemail_unanswered_is_missed_once_told(
        rows: str, messages: list[vm.LeftMessage], missed_at: datetime | None) -> None:
    [end] = cdr.unanswered_ends(rows)
    missed = vm.missed_while_away(end, messages)
    if missed_at is None:
        assert missed is None
        return
    assert missed is not None
    # The record the dialplan's h extension would have made the controller write.
    assert (missed.key, missed.at, missed.sender, missed.recipient, missed.outcome) == (
        "missed:1764300000.42", missed_at, "+17205550141", "+13125550101", Outcome.MISSED)
    assert missed.delivery is Delivery.HELD


def test_only_calls_that_rang_or_reached_voicemail_are_told() -> None:
    text = cdr_row("backline-announce", "Playback", "ANSWERED", "2026-11-28 03:00:00",
                   "2026-11-28 03:00:09", uniqueid="1.1") + RANG + "not,a,row\n"
    assert [e.uniqueid for e in cdr.unanswered_ends(text)] == ["1764300000.42"]


async def test_a_years_record_is_imported_in_one_pass_within_a_bounded_memory(
        tmp_path: Path) -> None:
    """Every AMI login reads the whole Master.csv (a year of a practice's calls is tens of
    MB): line by line, once for its carrier calls, 911s and unanswered ends together, never
    held whole (it was read whole, then parsed three times, once into a dict of every row).
    Python's allocations are traced: 30,000 rows stand for a year, which takes long traced."""
    from backline.app.controller import Controller

    (tmp_path / "spool").mkdir()
    master = tmp_path / "Master.csv"
    path = tmp_path / "practice.yaml"
    path.write_text("practice: {name: P, timezone: UTC}\n"
                    "numbers:\n  - {number: '+13125550101', voicemail_box: '101'}\n"
                    "connections:\n"
                    f"  storage: {{url: 'sqlite://{tmp_path}/journal.db'}}\n"
                    "  pbx:\n"
                    "    ami: {secret_env: BACKLINE_TEST_AMI_SECRET}\n"
                    f"    cdr_file: {master}\n"
                    f"    fax_dir: {tmp_path}/fax\n"
                    f"    spool_dir: {tmp_path}/spool\n")
    # A year of desk phones calling each other, then what the controller missed while away:
    # a 911, a call the PBX announced, and a call that rang a desk phone unanswered.
    with master.open("w") as out:
        for n in range(30_000):
            out.write(desk_row(f"1{n % 50:02d}", f"1764000000.{n}"))
        out.write(desk_row("911", "1764300000.7"))
        out.write(cdr_row("backline-announce", "Playback", "ANSWERED", "2026-11-28 03:00:00",
                          "2026-11-28 03:00:09", uniqueid="1764300000.41"))
        out.write(RANG)
    size = master.stat().st_size
    controller = Controller(config.load(path).directory,
                            open_journal(f"sqlite://{tmp_path}/journal.db"))
    tracemalloc.start()
    try:
        new = await controller.import_pbx_record()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        journal = controller.journal
    try:
        assert new == 2
        announced = journal.attempt("call:1764300000.41")
        assert announced is not None and announced.outcome is Outcome.ANNOUNCED
        assert [c.key for c in journal.emergency_calls()] == ["emergency:1764300000.7"]
        missed = journal.attempt("missed:1764300000.42")
        assert missed is not None and missed.outcome is Outcome.MISSED
    finally:
        journal.close()
    assert size > 4_000_000
    assert peak < size / 4, (peak, size)  # neither the file held whole nor its rows


def test_the_mark_after_the_dialled_number_is_no_part_of_it() -> None:
    [row] = cdr.parse(KEPT_NONE)
    assert row.dialled == "+13125550101"
    [end] = cdr.unanswered_ends(KEPT_NONE)
    assert (end.number, end.no_message) == ("+13125550101", True)
    [end] = cdr.unanswered_ends(RECORDING)
    assert end.no_message is False


def test_a_torn_row_costs_its_own_line_never_the_rows_after_it() -> None:
    """cdr_csv writes each row in one fputs: one cut short (Asterisk killed mid-write, the
    disk full) leaves a quote open, and the next row is appended to it.  That line is lost,
    and nothing after it: the missed call and the 911 on the following lines are still told,
    a row whose value holds a line break (a %0A in the Request-URI, decoded by pjsip into
    EXTEN; cdr_csv escapes nothing but quotes) is read whole, and what was skipped is
    counted, not shown."""
    announced = cdr_row("backline-announce", "Playback", "ANSWERED", "2026-11-28 02:59:00",
                        "2026-11-28 02:59:09", uniqueid="1764300000.40")
    broken = cdr_row("backline-announce", "Playback", "ANSWERED", "2026-11-28 02:59:30",
                     "2026-11-28 02:59:39", uniqueid="1764300000.41").replace(
        '"Caller"', '"Caller\n(line two)"')
    torn = announced[:70]  # no line end: the next row is written onto it
    text = (broken + torn + announced + RANG + desk_row("911", "1764300000.7")
            + "\n".join(['"a","quote","never","closed'] * 200) + "\n"
            + announced.replace("1764300000.40", "1764300000.43"))
    reading = cdr.read(io.StringIO(text), {"911"})
    assert [r.uniqueid for r in reading.rows] == ["1764300000.41", "1764300000.42",
                                                 "1764300000.43"]
    assert [e.key for e in reading.emergencies] == ["emergency:1764300000.7"]
    assert [e.uniqueid for e in reading.ends] == ["1764300000.42"]
    assert reading.skipped == 201
    # A quote left open at the very end costs that line alone.
    assert [r.uniqueid for r in cdr.read(io.StringIO(announced + torn), ()).rows] == \
        ["1764300000.40"]
