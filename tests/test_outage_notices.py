"""Outage notices: when an outage is engaged every alert recipient is told at once, and when
it ends they get a closing notice.  Which are owed and what they say (pure), then the real
thing: a controller, a real SMTP server (aiosmtpd) and the Twilio stand-in, the clock moved
by hand (tests/harness/alert_site.py, as the alert and reminder tests).

What is shown: both notices reach every recipient once, across controller restarts in
between (even one where an address had refused the notice); an SMTP server and gateway down
at the switch get the notice when back, once; two controllers on one journal send each once;
no notice names a patient or the reason typed when the outage was engaged.  On the real
Asterisk: after a crash in an outage, the closing notice waits for the import of the PBX's
record and counts the call Asterisk answered alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from backline.core.model import DEFAULT_ANNOUNCEMENT
from backline.core.outage import Mode, ModeChange, Via, switch
from backline.features.notices import policy as notice
from backline.features.notices.policy import Held, Kind, Notice, Outage
from backline.features.notices.service import OutageNotices
from backline.features.sending import retry
from backline.journal import AttemptKind
from tests.harness.alert_site import (
    ALERT_EMAILS,
    ALERT_SMS,
    FAX_NUMBER,
    PRACTICE_NAME,
    PRACTICE_NUMBER,
    AlertSite,
    Site,
)
from tests.harness.sms_gateway import SentSms
from tests.harness.smtp_sink import Received
from tests.test_alerts import SECRETS, everything_in, spellings

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)  # 08:00 in Chicago
HOUR = 3600.0
EMAILS = len(ALERT_EMAILS)
TEXTS = len(ALERT_SMS)
REASON = "Janette Quillfeather says the lisinopril line is dead"


def change(mode: Mode, at: datetime, via: Via = Via.CLI, by: str = "ops") -> ModeChange:
    return ModeChange(mode, at, by, via, "drill" if mode is Mode.OUTAGE else "")


# -- which are owed, and what they say: pure ----------------------------------------------------

ON1, OFF1 = change(Mode.OUTAGE, T0), change(Mode.NORMAL, T0 + timedelta(hours=2))
ON2 = change(Mode.OUTAGE, T0 + timedelta(hours=3))
OFF2 = change(Mode.NORMAL, T0 + timedelta(hours=5))


@pytest.mark.parametrize(("history", "now", "expected"), [
    ([], T0, []),  # never engaged
    ([ON1], T0, [Notice(Kind.START, Outage(ON1))]),
    ([ON1], T0 + timedelta(days=30), [Notice(Kind.START, Outage(ON1))]),  # still on
    # Ended: the end notice tells it all; the start notice is moot.
    ([OFF1, ON1], T0 + timedelta(hours=2), [Notice(Kind.END, Outage(ON1, OFF1))]),
    # Engaged again: the first outage's end is still owed, then the new one's start.
    ([ON2, OFF1, ON1], ON2.at,
     [Notice(Kind.END, Outage(ON1, OFF1)), Notice(Kind.START, Outage(ON2))]),
    ([OFF2, ON2, OFF1, ON1], OFF2.at,
     [Notice(Kind.END, Outage(ON1, OFF1)), Notice(Kind.END, Outage(ON2, OFF2))]),
    # An end older than the window is not announced (a journal's old outages, on deploy).
    ([OFF2, ON2, OFF1, ON1], OFF1.at + notice.END_WINDOW + timedelta(seconds=1),
     [Notice(Kind.END, Outage(ON2, OFF2))]),
    ([OFF1], OFF1.at, []),  # its engaging switch is older than the history read
])
def test_the_notices_owed(history: list[ModeChange], now: datetime,
                          expected: list[Notice]) -> None:
    assert notice.owed(history, now) == expected


def test_what_was_sent_is_read_back_per_outage_and_notice() -> None:
    start, end = Notice(Kind.START, Outage(ON1)), Notice(Kind.END, Outage(ON1, OFF1))
    details = [
        notice.audit_detail(start, "email:ops@maple.example"),
        notice.audit_detail(end, "email:ana.alerts@maple.example"),
        notice.audit_detail(Notice(Kind.START, Outage(ON2)), "sms:+13125550199"),
        "outage=garbage",
    ]
    assert notice.sent_to(details, start) == {"email:ops@maple.example"}
    assert notice.sent_to(details, end) == {"email:ana.alerts@maple.example"}


def test_message_ids_are_stable_and_distinct() -> None:
    start = Notice(Kind.START, Outage(ON1))
    one = notice.message_id(PRACTICE_NAME, "b@maple.example", start, "email:a@maple.example")
    assert one == notice.message_id(PRACTICE_NAME, "b@maple.example", start,
                                    "email:a@maple.example")
    others = {
        notice.message_id(PRACTICE_NAME, "b@maple.example", start, "email:b@maple.example"),
        notice.message_id(PRACTICE_NAME, "b@maple.example", Notice(Kind.END, Outage(ON1, OFF1)),
                          "email:a@maple.example"),
        notice.message_id(PRACTICE_NAME, "b@maple.example", Notice(Kind.START, Outage(ON2)),
                          "email:a@maple.example"),
        notice.message_id("Oak Clinic", "b@maple.example", start, "email:a@maple.example"),
    }
    assert one not in others and len(others) == 4
    assert one.startswith("<outage-notice.") and one.endswith("@maple.example>")


@pytest.mark.parametrize(("held", "words"), [
    (Held({"call": 3}, 0), "Delivery to the inbox has finished."),
    (Held({"call": 3}, 2), "has not finished yet: 2 items are still being delivered"),
    (Held({}, 4, "connections.inbox is not configured"),
     "4 items wait, and cannot go yet (connections.inbox is not configured)"),
])
def test_whether_delivery_has_finished_is_said(held: Held, words: str) -> None:
    assert words in notice.delivery_words(held)


def test_every_kind_is_counted_zeros_too() -> None:
    assert notice.held_words({"call": 1, "sms": 2, "email": 1}) == (
        "1 call, 2 texts, 0 faxes and 1 email")


def test_the_texts_fit_one_segment_and_the_emails_take_no_extra_headers() -> None:
    long_by = change(Mode.OUTAGE, T0, Via.CONSOLE, by="console:" + "x" * 300)
    ended = change(Mode.NORMAL, T0 + timedelta(days=6, minutes=59), by="y" * 300)
    outage = Outage(long_by, ended)
    held = Held({"call": 99999, "sms": 99999, "fax": 99999, "email": 99999}, 99999, "x" * 400)
    assert len(notice.start_sms("M" * 500, long_by, "America/Chicago")) <= 160
    assert len(notice.end_sms("M" * 500, outage, "America/Chicago", held)) <= 160
    evil = "Maple\r\nBcc: evil@example.com"
    messages = [
        notice.start_email(practice=evil, sender="b@maple.example", to="ops@maple.example",
                           message_id="<n.1@maple.example>", engaged=long_by, sent_at=T0,
                           tz="America/Chicago", announcement="hello\r\nBcc: x@example.com"),
        notice.end_email(practice=evil, sender="b@maple.example", to="ops@maple.example",
                         message_id="<n.2@maple.example>", outage=outage, sent_at=T0,
                         tz="America/Chicago", held=held, status_url="http://h:1/status")]
    for message in messages:
        assert message["Bcc"] is None and "\n" not in str(message["Subject"])


# -- the real thing -----------------------------------------------------------------------------


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with AlertSite(tmp_path, notices=True) as s:
        assert s.clock() == T0
        yield s


def notices_of(site: Site) -> OutageNotices:
    assert site.controller is not None and site.controller.notices is not None
    return site.controller.notices


async def switch_to(site: Site, mode: Mode, *, reason: str = "carrier down",
                    via: Via = Via.CLI, by: str = "ops") -> None:
    """As ``backline outage engage/end`` does: a change written to the journal, which the
    running controller then adopts (its mode watcher's tick, here by hand)."""
    assert site.journal is not None and site.controller is not None
    state = site.journal.mode_state()
    made = switch(state, mode, at=site.clock(), by=by, via=via, reason=reason)
    site.journal.record_mode_change(made, state)
    await site.controller.sync_once()
    assert site.controller.mode() is mode


def is_notice(received: Received) -> bool:
    return str(received.message()["Message-ID"]).startswith("<outage-notice.")


def mailed(site: Site, kind: Kind) -> list[Received]:
    """The notices of ``kind`` the SMTP server took (alerts and reminders left out)."""
    subject = "is now in backup" if kind is Kind.START else "mode has ended"
    return [m for m in site.sink.received
            if is_notice(m) and subject in " ".join(str(m.message()["Subject"]).split())]


def texted(site: Site, kind: Kind) -> list[SentSms]:
    said = "phone outage mode ON since" if kind is Kind.START else "phone outage ended"
    return [t for t in site.gateway.sent if said in t.body]


def body(received: Received) -> str:
    part = received.message().get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return " ".join(str(part.get_content()).split())


async def settled(site: Site, kind: Kind, emails: int = EMAILS, texts: int = TEXTS
                  ) -> tuple[list[Received], list[SentSms]]:
    """A whole notice round, after which exactly ``emails`` and ``texts`` of ``kind``
    notices have arrived, each recipient's once."""
    await notices_of(site).settle()
    got, sent = mailed(site, kind), texted(site, kind)
    assert len(got) == emails and len(sent) == texts
    assert all(n == 1 for n in Counter(r for m in got for r in m.rcpt_tos).values())
    assert all(n == 1 for n in Counter(t.to for t in sent).values())
    return got, sent


async def test_start_and_end_notices_reach_each_recipient_once_across_restarts(
        site: Site, tmp_path: Path) -> None:
    await switch_to(site, Mode.OUTAGE, via=Via.DESK_PHONE, by="ana")
    emails, texts = await settled(site, Kind.START)
    assert sorted(r for m in emails for r in m.rcpt_tos) == sorted(ALERT_EMAILS)
    assert [t.to for t in texts] == list(ALERT_SMS) and texts[0].sender == PRACTICE_NUMBER
    assert " ".join(str(emails[0].message()["Subject"]).split()) == (
        f"{PRACTICE_NAME} is now in backup (outage) mode")
    text = body(emails[0])
    assert ("put in backup (outage) mode at Mon 03 Mar 2025, 08:00 CST by ana, from an "
            "admin's desk phone.") in text
    assert f'Callers now hear the outage announcement: "{DEFAULT_ANNOUNCEMENT}"' in text
    assert "backline outage end" in text and "*29" in text
    assert texts[0].body == (f"{PRACTICE_NAME}: phone outage mode ON since Mon 08:00, by ana. "
                             "Callers hear the outage announcement. Details by email.")

    for _ in range(2):  # restarted while it lasts: nothing again
        await site.restart_controller()
        await settled(site, Kind.START)

    fax = tmp_path / "fax.pdf"
    fax.write_bytes(b"%PDF-1.4 stand-in")
    site.clock.advance(60)
    await site.record(AttemptKind.CALL, SECRETS["caller number"], PRACTICE_NUMBER)
    await site.record(AttemptKind.CALL, SECRETS["caller number"], PRACTICE_NUMBER)
    await site.record(AttemptKind.SMS, SECRETS["SMS sender"], PRACTICE_NUMBER,
                      text=SECRETS["SMS text"])
    await site.record(AttemptKind.FAX, SECRETS["fax sender"], FAX_NUMBER, file=str(fax))
    site.clock.advance(2 * HOUR + 30 * 60 - 60)
    await switch_to(site, Mode.NORMAL)
    emails, texts = await settled(site, Kind.END)
    assert " ".join(str(emails[0].message()["Subject"]).split()) == (
        f"{PRACTICE_NAME}: backup (outage) mode has ended")
    text = body(emails[0])
    assert ("back in normal mode since Mon 03 Mar 2025, 10:30 CST, ended by ops from the "
            "command line. The outage lasted 2 hours 30 minutes (engaged Mon 03 Mar 2025, "
            "08:00 CST by ana).") in text
    assert "Held during the outage: 2 calls, 1 text, 1 fax and 0 emails." in text
    # This practice has no inbox configured: the notice says the items wait, and why.
    assert ("Delivery to the inbox has not finished: 4 items wait, and cannot go yet "
            "(connections.inbox is not configured).") in text
    assert f"{site.status_url}/status" in text
    assert texts[0].body == (f"{PRACTICE_NAME}: phone outage ended Mon 10:30 after 2 hours "
                             "30 minutes. 4 items held; inbox delivery in progress. See email.")
    await settled(site, Kind.START)  # the start notice is not sent again

    for _ in range(2):
        await site.restart_controller()
        await settled(site, Kind.END)
        await settled(site, Kind.START)


async def test_a_restart_sends_only_what_the_last_controller_had_not(site: Site) -> None:
    site.sink.refuse_next(1)  # the first address's start notice is refused (451)
    await switch_to(site, Mode.OUTAGE)
    await notices_of(site).settle()
    assert site.sink.refusals == 1
    emails, _ = await settled(site, Kind.START, EMAILS - 1)
    assert list(emails[0].rcpt_tos) == [ALERT_EMAILS[1]]

    await site.restart_controller()
    emails, _ = await settled(site, Kind.START)  # only the refused one, at once
    assert list(emails[-1].rcpt_tos) == [ALERT_EMAILS[0]]
    start = Notice(Kind.START, Outage(notices_of(site).journal.mode_history(1)[0]))
    assert {str(m.message()["Message-ID"]) for m in emails} == {
        notice.message_id(PRACTICE_NAME, "backline@maple.example", start, f"email:{a}")
        for a in ALERT_EMAILS}
    assert site.journal is not None
    assert {e.detail for e in site.journal.audit_entries(notice.SENT_ACTION)} == {
        notice.audit_detail(start, r)
        for r in [f"email:{a}" for a in ALERT_EMAILS] + [f"sms:{n}" for n in ALERT_SMS]}


async def test_smtp_and_gateway_down_at_the_switch_the_notice_goes_when_back_once(
        site: Site) -> None:
    await site.sink.stop()
    site.gateway.fail_next(1, 503)
    await switch_to(site, Mode.OUTAGE)
    await notices_of(site).settle()  # tried: SMTP unreachable, the gateway 503
    site.clock.advance(retry.retry_delay(1) - 1)
    await notices_of(site).settle()  # backing off: not tried again yet
    assert site.gateway.sent == [] and site.gateway.requests == 1
    await site.sink.start()
    site.clock.advance(1)
    await settled(site, Kind.START)
    for _ in range(3):
        site.clock.advance(retry.MAX_RETRY)
        await settled(site, Kind.START)

    await site.sink.stop()  # and the same for the end notice
    site.clock.advance(HOUR)
    await switch_to(site, Mode.NORMAL)
    await settled(site, Kind.END, 0, TEXTS)  # the texts go; the emails wait
    await site.sink.start()
    site.clock.advance(retry.MAX_RETRY)
    await settled(site, Kind.END)
    site.clock.advance(retry.MAX_RETRY)
    await settled(site, Kind.END)


async def test_no_notice_holds_patient_data_nor_the_reason(
        site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await switch_to(site, Mode.OUTAGE, reason=REASON)
    await settled(site, Kind.START)
    fax = tmp_path / "fax.pdf"
    fax.write_bytes(b"%PDF-1.4 stand-in")
    await site.record(AttemptKind.CALL, SECRETS["caller number"], PRACTICE_NUMBER,
                      detail=f"caller name: {SECRETS['caller name']}")
    await site.record(AttemptKind.SMS, SECRETS["SMS sender"], PRACTICE_NUMBER,
                      text=SECRETS["SMS text"])
    await site.record(AttemptKind.FAX, SECRETS["fax sender"], FAX_NUMBER, file=str(fax),
                      detail=f"station ID: {SECRETS['fax station ID']}")
    site.clock.advance(HOUR)
    await switch_to(site, Mode.NORMAL)
    await settled(site, Kind.END)
    ours = [m for m in site.sink.received if is_notice(m)]
    assert len(ours) == 2 * EMAILS
    haystacks = {f"notice {i} to {m.rcpt_tos[0]}": everything_in(m) for i, m in enumerate(ours)}
    haystacks |= {f"notice SMS {i}": t.body.lower()
                  for i, t in enumerate(texted(site, Kind.START) + texted(site, Kind.END))}
    haystacks["the notices' logs"] = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("backline.notifier.not")
    ).lower()
    assert "the end notice of the outage emailed" in haystacks["the notices' logs"]
    assert "1 call, 1 text, 1 fax" in haystacks[f"notice {EMAILS} to {ours[EMAILS].rcpt_tos[0]}"]
    secrets = dict(SECRETS) | {"reason": REASON}
    for what, secret in secrets.items():
        for spelling in spellings(secret):
            for where, text in haystacks.items():
                assert spelling.lower() not in text, f"{what} ({spelling!r}) in {where}"


# -- several controllers on one journal ---------------------------------------------------------


async def test_two_controllers_on_one_journal_send_each_notice_once(site: Site) -> None:
    from backline.app import config
    from backline.features.notices.service import notices_for
    from backline.journal import open_journal

    assert site.controller is not None
    directory = config.load(site.tmp / "practice.yaml").directory
    journal = open_journal(directory.connections.storage.url)
    modes = site.controller.modes
    other = notices_for(directory, journal, site.clock, lambda: modes.changed)
    assert other is not None and other.holder != notices_of(site).holder
    other.start()
    try:
        await switch_to(site, Mode.OUTAGE)
        for _ in range(3):  # both look, at the same time, several times
            await asyncio.gather(notices_of(site).settle(), other.settle())
        await settled(site, Kind.START)
        site.clock.advance(HOUR)
        await switch_to(site, Mode.NORMAL)
        for _ in range(3):
            await asyncio.gather(notices_of(site).settle(), other.settle())
        await settled(site, Kind.END)
        await settled(site, Kind.START)
    finally:
        await other.close()
        other.journal.close()


# -- after a crash: the calls the PBX answered alone are counted ------------------------------

CALLER_LINE = "+13125550101"  # the test practice's direct line (tests/harness/practice_pbx.py)


@pytest.mark.asterisk
@pytest.mark.timeout(240)
async def test_after_a_crash_the_end_notice_waits_for_and_counts_what_the_pbx_took_alone(
        tmp_path: Path) -> None:
    from backline.app import config
    from backline.app.controller import Controller
    from backline.app.serve import asterisk_driver
    from backline.core.connections import AsteriskPbx
    from backline.features.notices.feature import Notices
    from backline.journal import open_journal
    from tests.harness.backline_process import BacklineProcess
    from tests.harness.fax_sender import wait_for_cdr
    from tests.harness.practice_pbx import AMI_ENV, practice_pbx
    from tests.harness.sipp import place_calls
    from tests.harness.smtp_sink import SmtpSink

    async with SmtpSink() as sink, practice_pbx(
            tmp_path, "notice-crash", controller_in_process=False, connections_extra=(
                f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
                "from: backline@t.example}\n")) as pbx:
        alerting = pbx.config_path.with_name("alerting.yaml")
        alerting.write_text(pbx.config_path.read_text().replace(
            "backup:\n", "backup:\n  alerts: {kind: email, emails: [ops@t.example]}\n", 1))
        directory = config.load(alerting).directory
        conf = directory.connections.pbx
        assert isinstance(conf, AsteriskPbx) and conf.cdr_file
        run = BacklineProcess("run", str(alerting))
        journal = open_journal(directory.connections.storage.url)
        try:
            await asyncio.to_thread(run.wait_for, "ready", 60)
            # Engaged (as `backline outage engage` writes it) ten seconds back: the call
            # record's times are whole seconds, and the call must fall inside the outage.
            state = journal.mode_state()
            journal.record_mode_change(switch(
                state, Mode.OUTAGE, at=datetime.now(UTC) - timedelta(seconds=10), by="ops",
                via=Via.CLI, reason="drill"), state)
            await asyncio.to_thread(run.wait_for, "mode is now outage", 60)
            run.signal(signal.SIGKILL)  # the crash: no goodbye, Asterisk goes on alone
        finally:
            run.signal(signal.SIGKILL)
        call = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, CALLER_LINE,
                           from_user="carrier", calls=1, timeout=60)
        assert (await asyncio.to_thread(call.wait, 60)).ok, call.describe()
        await asyncio.to_thread(wait_for_cdr, Path(conf.cdr_file),
                                lambda r: r.context != "backline-fax", 30)
        state = journal.mode_state()
        journal.record_mode_change(switch(state, Mode.NORMAL, at=datetime.now(UTC),
                                          by="ops", via=Via.CLI, reason=""), state)
        journal.close()

        # The controller returns; the PBX is not reached yet, so its record is not read.
        back = Controller(directory, open_journal(directory.connections.storage.url))
        notices = back.feature(Notices)
        assert notices is not None
        driver = asterisk_driver(back, conf, os.environ[AMI_ENV])
        back.attach(driver)
        try:
            await back.start()
            await notices.service.settle()
            assert not [m for m in sink.received if is_notice(m) and "mode has ended"
                        in " ".join(str(m.message()["Subject"]).split())], \
                "the end notice went before the PBX's record was imported"
            before = len(sink.received)  # the start notice, if `run` sent it before the crash
            await driver.start()  # the login imports the record, and the notice goes
            await sink.wait_for(before + 1, within=30)
        finally:
            await driver.stop()
            await back.close()
            back.journal.close()
    (ended,) = [m for m in sink.received
                if "mode has ended" in " ".join(str(m.message()["Subject"]).split())]
    assert "Held during the outage: 1 call, 0 texts, 0 faxes and 0 emails." in body(ended)
