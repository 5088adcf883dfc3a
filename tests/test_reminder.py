"""Outage reminders: while an outage stays engaged, every alert recipient is reminded every
``backup.reminder_hours``.  The schedule and the message (pure), then the real
thing: a controller, a real SMTP server (aiosmtpd) and the Twilio stand-in, the clock moved
by hand (tests/harness/alert_site.py, as the alert tests).

What is shown: one reminder per recipient after each interval, none before and none after
the outage ends; a controller restart sends no slot twice (not even to the recipients that
had it when the other one failed); an SMTP server or SMS gateway that is down at the due time
gets the reminder when it is back; the reminder names no patient and not the reason typed
when the outage was engaged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from backline.app import config
from backline.core.outage import Mode, ModeChange, ModeState, Via, switch
from backline.features.reminders import policy as reminder
from backline.features.reminders.policy import Slot
from backline.features.reminders.service import OutageReminders
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
from tests.harness.smtp_sink import Received
from tests.test_alerts import SECRETS, everything_in, spellings

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)  # 08:00 in Chicago
HOUR = 3600.0
INTERVAL = 4 * HOUR  # the default backup.reminder_hours
EMAILS = len(ALERT_EMAILS)
REASON = "Janette Quillfeather says the lisinopril line is dead"


def engaged_at(at: datetime) -> ModeState:
    return ModeState(Mode.OUTAGE, ModeChange(Mode.OUTAGE, at, "ops", Via.CLI, "drill"))


# -- the schedule and the message: pure ---------------------------------------------------------

EVERY = timedelta(hours=4)


@pytest.mark.parametrize(("state", "now", "expected"), [
    (ModeState.initial(), T0 + 10 * EVERY, None),  # never engaged
    (ModeState(Mode.NORMAL, ModeChange(Mode.NORMAL, T0, "ops", Via.CLI, "")), T0 + 9 * EVERY,
     None),
    (engaged_at(T0), T0, None),  # just engaged: the switch itself told whoever made it
    (engaged_at(T0), T0 + EVERY - timedelta(microseconds=1), None),
    (engaged_at(T0), T0 + EVERY, Slot(T0, 1, T0 + EVERY)),
    (engaged_at(T0), T0 + 2.5 * EVERY, Slot(T0, 2, T0 + 2 * EVERY)),  # the newest only
    (engaged_at(T0), T0 - timedelta(hours=1), None),  # a clock behind the switch's
])
def test_the_newest_reminder_due(state: ModeState, now: datetime, expected: Slot | None) -> None:
    assert reminder.due_slot(state, now, EVERY) == expected


def test_the_next_reminder_is_one_interval_after_the_last() -> None:
    assert reminder.next_due_at(engaged_at(T0), T0, EVERY) == T0 + EVERY
    assert reminder.next_due_at(engaged_at(T0), T0 + EVERY, EVERY) == T0 + 2 * EVERY
    assert reminder.next_due_at(engaged_at(T0), T0 + 1.5 * EVERY, EVERY) == T0 + 2 * EVERY
    assert reminder.next_due_at(ModeState.initial(), T0, EVERY) is None


def test_what_was_sent_is_read_back_per_outage_and_slot() -> None:
    slot = Slot(T0, 2, T0 + 2 * EVERY)
    details = [
        reminder.audit_detail(slot, "email:ops@maple.example"),
        reminder.audit_detail(Slot(T0, 1, T0 + EVERY), "email:ana.alerts@maple.example"),
        # another outage's
        reminder.audit_detail(Slot(T0 + EVERY, 2, T0 + 3 * EVERY), "sms:+13125550199"),
        "outage=garbage",
    ]
    assert reminder.sent_to(details, slot) == {"email:ops@maple.example"}
    assert all(d.startswith(reminder.outage_key(T0)) for d in details[:2])


def test_message_ids_are_stable_and_distinct() -> None:
    slot = Slot(T0, 1, T0 + EVERY)
    one = reminder.message_id(PRACTICE_NAME, "b@maple.example", slot, "email:a@maple.example")
    assert one == reminder.message_id(PRACTICE_NAME, "b@maple.example", slot,
                                      "email:a@maple.example")
    others = {
        reminder.message_id(PRACTICE_NAME, "b@maple.example", slot, "email:b@maple.example"),
        reminder.message_id(PRACTICE_NAME, "b@maple.example", Slot(T0, 2, T0 + 2 * EVERY),
                            "email:a@maple.example"),
        reminder.message_id(PRACTICE_NAME, "b@maple.example",
                            Slot(T0 + EVERY, 1, T0 + 2 * EVERY),
                            "email:a@maple.example"),
        reminder.message_id("Oak Clinic", "b@maple.example", slot, "email:a@maple.example"),
    }
    assert one not in others and len(others) == 4
    assert one.startswith("<reminder.") and one.endswith("@maple.example>")


@pytest.mark.parametrize(("elapsed", "text"), [
    (timedelta(hours=4), "4 hours"), (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
    (timedelta(minutes=45, seconds=59), "45 minutes"), (timedelta(0), "0 minutes")])
def test_duration(elapsed: timedelta, text: str) -> None:
    assert reminder.duration(elapsed) == text


def test_the_sms_fits_one_segment_and_the_email_takes_no_extra_headers() -> None:
    slot = Slot(T0, 99, T0 + 99 * EVERY)
    text = reminder.reminder_sms("M" * 500, slot, T0 + 999 * EVERY, "America/Chicago")
    assert len(text) <= 160
    message = reminder.reminder_email(
        practice="Maple\r\nBcc: evil@example.com", sender="b@maple.example",
        to="ops@maple.example", message_id="<r.1@maple.example>", slot=slot, sent_at=T0,
        tz="America/Chicago", interval=EVERY)
    assert message["Bcc"] is None and "\n" not in str(message["Subject"])


CONFIG = """\
practice: {{name: Maple, timezone: America/Chicago}}
backup:
  reminder_hours: {value}
connections:
  storage: {{url: "sqlite://{journal}"}}
"""


@pytest.mark.parametrize(("value", "hours"), [("4", 4.0), ("0.5", 0.5), ("24", 24.0)])
def test_reminder_hours_is_read(tmp_path: Path, value: str, hours: float) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(CONFIG.format(value=value, journal=tmp_path / "j.db"))
    assert config.load(path).directory.backup.reminder_hours == hours


def test_reminder_hours_defaults_to_four(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(CONFIG.format(value="4", journal=tmp_path / "j.db").replace(
        "backup:\n  reminder_hours: 4\n", ""))
    assert config.load(path).directory.backup.reminder_hours == 4.0


@pytest.mark.parametrize("value", ["0", "-1", "often", "true", ".inf", "[4]", "0.0001", "0.2",
                                   "169"])
def test_a_bad_reminder_hours_is_a_problem_with_file_line_and_field(
        tmp_path: Path, value: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(CONFIG.format(value=value, journal=tmp_path / "j.db"))
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [
        (str(path), 3, "backup.reminder_hours")]
    assert "positive number of hours" in caught.value.problems[0].expected


# -- the real thing -----------------------------------------------------------------------------


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with AlertSite(tmp_path) as s:
        assert s.clock() == T0
        yield s


def reminders_of(site: Site) -> OutageReminders:
    assert site.controller is not None and site.controller.reminders is not None
    return site.controller.reminders


async def switch_to(site: Site, mode: Mode, *, at: datetime | None = None,
                    reason: str = "carrier down") -> None:
    """As ``backline outage engage/end`` does: a change written to the journal, which the
    running controller then adopts (its mode watcher's tick, here by hand)."""
    assert site.journal is not None and site.controller is not None
    state = site.journal.mode_state()
    change = switch(state, mode, at=at or site.clock(), by="ops", via=Via.CLI, reason=reason)
    site.journal.record_mode_change(change, state)
    await site.controller.sync_once()
    assert site.controller.mode() is mode


def body(received: Received) -> str:
    part = received.message().get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def is_reminder(received: Received) -> bool:
    return str(received.message()["Message-ID"]).startswith("<reminder.")


def by_recipient(received: list[Received]) -> Counter[str]:
    return Counter(r for m in received for r in m.rcpt_tos)


async def quiet(site: Site, emails: int, texts: int) -> None:
    """A whole reminder round, and still only that many emails and texts."""
    await reminders_of(site).settle()
    assert len(site.sink.received) == emails and len(site.gateway.sent) == texts


async def test_one_reminder_per_recipient_each_interval_while_engaged(site: Site) -> None:
    await switch_to(site, Mode.OUTAGE)
    await quiet(site, 0, 0)
    site.clock.advance(INTERVAL - 1)  # not before
    await quiet(site, 0, 0)
    site.clock.advance(1)
    reminders_of(site).wake()
    emails = await site.sink.wait_for(EMAILS)
    texts = await site.gateway.wait_for_sent(len(ALERT_SMS))
    assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS}
    assert [t.to for t in texts] == list(ALERT_SMS) and texts[0].sender == PRACTICE_NUMBER
    message = emails[0].message()
    assert " ".join(str(message["Subject"]).split()) == (
        f"Reminder: {PRACTICE_NAME} is still in backup (outage) mode")
    text = " ".join(body(emails[0]).split())
    assert "since Mon 03 Mar 2025, 08:00 CST, for 4 hours now" in text
    assert "backline outage end" in text and "*29" in text
    assert "every 4 hours" in text
    assert "since Mon 08:00 (4 hours)" in texts[0].body and "*29" in texts[0].body
    await quiet(site, EMAILS, 1)  # once per slot, however often the task looks

    site.clock.advance(INTERVAL - 60)
    await quiet(site, EMAILS, 1)
    site.clock.advance(60)
    reminders_of(site).wake()
    emails = await site.sink.wait_for(2 * EMAILS)
    await site.gateway.wait_for_sent(2 * len(ALERT_SMS))
    assert by_recipient(emails) == {e: 2 for e in ALERT_EMAILS}
    assert "for 8 hours now" in " ".join(body(emails[-1]).split())
    assert len({m.message()["Message-ID"] for m in emails}) == 2 * EMAILS

    # Ended: no more, however long.
    site.clock.advance(HOUR)
    await switch_to(site, Mode.NORMAL)
    for _ in range(3):
        site.clock.advance(INTERVAL)
        await quiet(site, 2 * EMAILS, 2)
    # Engaged again: a new outage, its own first reminder one interval after its start.
    await switch_to(site, Mode.OUTAGE)
    site.clock.advance(INTERVAL - 1)
    await quiet(site, 2 * EMAILS, 2)
    site.clock.advance(1)
    reminders_of(site).wake()
    emails = await site.sink.wait_for(3 * EMAILS)
    assert "for 4 hours now" in " ".join(body(emails[-1]).split())


async def test_an_outage_adopted_from_the_journal_wakes_the_reminders(site: Site) -> None:
    """Engaged five hours ago (another controller, or the CLI while this one was away): the
    mode change itself wakes the task, and the one reminder owed goes at once."""
    await switch_to(site, Mode.OUTAGE, at=site.clock() - timedelta(hours=5))
    emails = await site.sink.wait_for(EMAILS)  # no wake(): the change woke it
    assert "for 5 hours now" in " ".join(body(emails[0]).split())
    await quiet(site, EMAILS, 1)


async def test_a_restart_sends_no_slot_twice(site: Site) -> None:
    site.sink.refuse_next(1)  # the first address's reminder is refused (451), the rest go
    await switch_to(site, Mode.OUTAGE)
    site.clock.advance(INTERVAL)
    await reminders_of(site).settle()
    assert site.sink.refusals == 1
    first = await site.sink.wait_for(EMAILS - 1)
    await site.gateway.wait_for_sent(len(ALERT_SMS))
    assert by_recipient(first) == {e: 1 for e in ALERT_EMAILS[1:]}

    await site.restart_controller()
    # The new controller owes the refused one only, and sends it at once.
    emails = await site.sink.wait_for(EMAILS)
    assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS}
    for _ in range(2):
        await site.restart_controller()
        await quiet(site, EMAILS, len(ALERT_SMS))
    assert site.journal is not None
    sent = site.journal.audit_entries(reminder.SENT_ACTION)
    assert len(sent) == EMAILS + len(ALERT_SMS)
    slot = Slot(T0, 1, T0 + timedelta(seconds=INTERVAL))
    assert {e.detail for e in sent} == {
        reminder.audit_detail(slot, r) for r in
        [f"email:{a}" for a in ALERT_EMAILS] + [f"sms:{n}" for n in ALERT_SMS]}
    # Each Message-ID is the stable one for (outage, slot, recipient).
    assert {str(m.message()["Message-ID"]) for m in emails} == {
        reminder.message_id(PRACTICE_NAME, "backline@maple.example", slot, f"email:{a}")
        for a in ALERT_EMAILS}
    # The next slot still comes, once.
    site.clock.advance(INTERVAL)
    reminders_of(site).wake()
    emails = await site.sink.wait_for(2 * EMAILS)
    await quiet(site, 2 * EMAILS, 2 * len(ALERT_SMS))


async def test_an_unreachable_gateway_is_tried_once_a_round_and_the_other_texts_wait(
        tmp_path: Path) -> None:
    # The one rule for a message that did not go (backline.features.sending.leased.NotSent):
    # a gateway that answers 503 is not tried again for the next number in the same round;
    # that number's reminder is put back, due after the backoff, and goes then, once.
    numbers = (ALERT_SMS[0], "+13125550198")
    async with AlertSite(tmp_path, sms=numbers) as site:
        await switch_to(site, Mode.OUTAGE)
        site.gateway.fail_next(1, 503)
        site.clock.advance(INTERVAL)
        await reminders_of(site).settle()
        assert (site.gateway.requests, site.gateway.sent) == (1, [])
        await site.sink.wait_for(EMAILS)  # the emails are not held back by the gateway
        site.clock.advance(retry.retry_delay(1))
        await reminders_of(site).settle()
        texts = await site.gateway.wait_for_sent(len(numbers))
        assert sorted(t.to for t in texts) == sorted(numbers)
        site.clock.advance(retry.MAX_RETRY)
        await quiet(site, EMAILS, len(numbers))


async def test_smtp_and_gateway_down_at_the_due_time_the_reminder_goes_when_back(
        site: Site) -> None:
    await switch_to(site, Mode.OUTAGE)
    await site.sink.stop()
    site.gateway.fail_next(1, 503)
    site.clock.advance(INTERVAL)
    await reminders_of(site).settle()  # tried: SMTP unreachable, the gateway 503
    site.clock.advance(retry.retry_delay(1) - 1)
    await reminders_of(site).settle()  # backing off: not tried again yet
    assert site.gateway.sent == []
    await site.sink.start()
    site.clock.advance(1)
    reminders_of(site).wake()
    emails = await site.sink.wait_for(EMAILS)
    texts = await site.gateway.wait_for_sent(len(ALERT_SMS))
    assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS}
    assert [t.to for t in texts] == list(ALERT_SMS)
    for _ in range(3):
        site.clock.advance(retry.MAX_RETRY)
        await quiet(site, EMAILS, len(ALERT_SMS))


async def test_a_reminder_holds_no_patient_data_nor_the_reason(
        site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await switch_to(site, Mode.OUTAGE, reason=REASON)
    fax = tmp_path / "fax.pdf"
    fax.write_bytes(b"%PDF-1.4 stand-in")
    await site.record(AttemptKind.CALL, SECRETS["caller number"], PRACTICE_NUMBER,
                      detail=f"caller name: {SECRETS['caller name']}")
    await site.record(AttemptKind.SMS, SECRETS["SMS sender"], PRACTICE_NUMBER,
                      text=SECRETS["SMS text"])
    await site.record(AttemptKind.FAX, SECRETS["fax sender"], FAX_NUMBER, file=str(fax),
                      detail=f"station ID: {SECRETS['fax station ID']}")
    await site.notifier.settle()
    site.clock.advance(10)
    await site.notifier.settle()
    alerts = await site.sink.wait_for(2 * EMAILS)  # the alerts for those attempts
    texts = len(site.gateway.sent)
    site.clock.advance(INTERVAL - 10)
    reminders_of(site).wake()
    received = await site.sink.wait_for(len(alerts) + EMAILS)
    sms = await site.gateway.wait_for_sent(texts + len(ALERT_SMS))
    ours = [m for m in received if is_reminder(m)]
    assert len(ours) == EMAILS
    haystacks = {f"reminder to {m.rcpt_tos[0]}": everything_in(m) for m in ours}
    haystacks |= {f"reminder SMS {i}": t.body.lower() for i, t in enumerate(sms[texts:])}
    haystacks["the reminders' logs"] = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("backline.notifier.rem")
    ).lower()
    assert "reminder 1 of the outage emailed" in haystacks["the reminders' logs"]
    secrets = dict(SECRETS) | {"reason": REASON}
    for what, secret in secrets.items():
        for spelling in spellings(secret):
            for where, text in haystacks.items():
                assert spelling.lower() not in text, f"{what} ({spelling!r}) in {where}"


# -- several controllers on one journal ---------------------------------------------------------


async def second_reminders(site: Site) -> OutageReminders:
    """Another controller's reminder task on the site's journal (its own connection)."""
    from backline.features.reminders.service import reminders_for
    from backline.journal import open_journal

    assert site.controller is not None
    directory = config.load(site.tmp / "practice.yaml").directory
    journal = open_journal(directory.connections.storage.url)
    controller = site.controller
    other = reminders_for(directory, journal, site.clock, lambda: controller.state,
                          lambda: controller.modes.changed)
    assert other is not None and other.holder != reminders_of(site).holder
    other.start()
    return other


async def test_two_controllers_on_one_journal_send_each_reminder_once(site: Site) -> None:
    other = await second_reminders(site)
    try:
        await switch_to(site, Mode.OUTAGE)
        site.clock.advance(INTERVAL)
        for _ in range(3):  # both look, at the same time, several times
            await asyncio.gather(reminders_of(site).settle(), other.settle())
        emails = await site.sink.wait_for(EMAILS)
        texts = await site.gateway.wait_for_sent(len(ALERT_SMS))
        assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS}
        assert Counter(t.to for t in texts) == {n: 1 for n in ALERT_SMS}
        assert len(site.sink.received) == EMAILS and len(site.gateway.sent) == len(ALERT_SMS)
    finally:
        await other.close()
        other.journal.close()


async def test_a_claim_whose_sender_died_is_taken_over_when_its_lease_runs_out(
        site: Site) -> None:
    from backline.features.reminders.service import CLAIM_SECONDS

    assert site.journal is not None
    await switch_to(site, Mode.OUTAGE)
    site.clock.advance(INTERVAL)
    slot = Slot(T0, 1, T0 + timedelta(seconds=INTERVAL))
    first = f"email:{ALERT_EMAILS[0]}"
    # Another controller claimed the first address's reminder, then died before sending it.
    assert site.journal.claim_lease("reminder " + reminder.audit_detail(slot, first),
                                    "elsewhere:4242:dead", site.clock(),
                                    site.clock() + timedelta(seconds=CLAIM_SECONDS))
    await reminders_of(site).settle()
    emails = await site.sink.wait_for(EMAILS - 1)
    assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS[1:]}  # not the claimed one
    site.clock.advance(CLAIM_SECONDS)
    await reminders_of(site).settle()
    emails = await site.sink.wait_for(EMAILS)
    assert by_recipient(emails) == {e: 1 for e in ALERT_EMAILS}
    await quiet(site, EMAILS, len(ALERT_SMS))
