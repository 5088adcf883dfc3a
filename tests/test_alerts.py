"""Backup alerts: gathering and retry rules (pure), then the real thing: a controller in an
outage, a real SMTP server (aiosmtpd) and the Twilio stand-in, the clock moved by hand.

What is shown: every recipient hears about each outage attempt within a second; a burst of 50
becomes two alerts; nothing in any email part or header, SMS or log line names a patient; an
SMTP server or SMS gateway that is down, and a controller restart on top, lose nothing and
send nothing twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from backline.core.connections import SmtpTls
from backline.core.outage import Mode, Via
from backline.features.alerts.compose import alert_email, alert_sms
from backline.features.alerts.gather import GatherPolicy
from backline.features.links import tokens as links
from backline.features.sending import retry
from backline.features.sending.mail import SmtpMailer
from backline.journal import (
    AlertChannel,
    AlertSlot,
    AlertState,
    AttemptKind,
    Delivery,
    JoinAlert,
    NewAttempt,
    OpenAlert,
    Outcome,
    open_journal,
)
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

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
EMAILS = len(ALERT_EMAILS)
LINK = re.compile(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_-]{43}")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- gathering and retrying: pure ---------------------------------------------------------------

P = GatherPolicy(first_window=10, max_window=60)


@pytest.mark.parametrize(("newest", "now", "expected"), [
    # Nothing yet: at once.
    (None, at(0), OpenAlert(at(0), 10)),
    # The newest alert is still waiting for its time: join it.
    (AlertSlot(7, at(10), 20, closed=False), at(3), JoinAlert(7)),
    # It went out (closed) or its time came: the next waits for the end of its window...
    (AlertSlot(7, at(0), 10, closed=True), at(1), OpenAlert(at(10), 20)),
    (AlertSlot(7, at(0), 10, closed=False), at(0), OpenAlert(at(10), 20)),
    # ...each window twice the last while attempts keep coming, up to the cap...
    (AlertSlot(8, at(10), 20, closed=True), at(12), OpenAlert(at(30), 40)),
    (AlertSlot(9, at(30), 40, closed=True), at(31), OpenAlert(at(70), 60)),
    (AlertSlot(9, at(70), 60, closed=True), at(71), OpenAlert(at(130), 60)),
    # ...and after a whole quiet window, at once again, the window back to the first.
    (AlertSlot(9, at(70), 60, closed=True), at(130), OpenAlert(at(130), 10)),
    # A closed alert is never joined, even before its due time (another node sent it early).
    (AlertSlot(7, at(10), 20, closed=True), at(3), OpenAlert(at(30), 40)),
])
def test_gathering(newest: AlertSlot | None, now: datetime, expected: object) -> None:
    assert P.place(newest, now) == expected


def test_a_burst_of_fifty_is_two_alerts_by_the_rule() -> None:
    newest: AlertSlot | None = None
    alerts: Counter[int] = Counter()
    for i in range(50):
        decision = P.place(newest, at(i * 0.1))
        if isinstance(decision, OpenAlert):
            newest = AlertSlot((newest.id if newest else 0) + 1, decision.due_at,
                               decision.window_seconds, closed=decision.due_at <= at(i * 0.1))
        alerts[newest.id if newest else 0] += 1
    assert alerts == Counter({1: 1, 2: 49})


@pytest.mark.parametrize(("failures", "delay"), [
    (1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 300), (8, 300), (1000, 300)])
def test_retry_schedule(failures: int, delay: float) -> None:
    assert retry.retry_delay(failures) == delay


def test_tokens_are_256_random_bits_url_safe_and_kept_as_sha256() -> None:
    tokens = {links.new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(links.TOKEN_PATTERN.fullmatch(t) for t in tokens)
    token = next(iter(tokens))
    assert re.fullmatch(r"[0-9a-f]{64}", links.token_hash(token))
    other = token[:-1] + ("B" if token[-1] == "A" else "A")
    assert links.token_hash(token) != links.token_hash(other)
    assert links.redact_links(f"GET /a/{token}/fax/3 HTTP/1.1") == "GET /a/…/fax/3 HTTP/1.1"


def test_an_alert_email_cannot_be_given_extra_headers() -> None:
    message = alert_email(practice="Maple\r\nBcc: evil@example.com", sender="b@maple.example",
                          to="ops@maple.example", message_id="<a.1@maple.example>",
                          alert_at=T0, sent_at=T0, tz="America/Chicago",
                          link="https://x.example/a/" + "A" * 43, link_hours=12)
    assert message["Bcc"] is None
    assert "\n" not in str(message["Subject"])
    assert len(alert_sms("M" * 500)) <= 160


def test_the_journal_lists_an_attempt_once_and_leases_a_delivery_to_one_sender(
        tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path / 'journal.db'}")
    ids = []
    for i in range(3):
        attempt, _ = journal.record_attempt(NewAttempt(
            key=f"k{i}", at=T0, kind=AttemptKind.CALL, mode=Mode.OUTAGE, sender="+17205550141",
            recipient=PRACTICE_NUMBER, outcome=Outcome.ANNOUNCED, delivery=Delivery.HELD))
        ids.append(attempt.id)
    recipients = [(AlertChannel.EMAIL, "ops@maple.example")]
    serial = iter(range(100))
    assert journal.gather(ids, T0, P.place, recipients, lambda: f"<{next(serial)}@x>") == 3
    assert journal.gather(ids, T0, P.place, recipients, lambda: f"<{next(serial)}@x>") == 0
    assert [len(journal.alert_attempts(a)) for a in (1, 2)] == [1, 2]
    assert journal.unalerted_attempts(T0) == []
    # Due now: alert 1.  Claimed once; a second sender (another controller) gets nothing
    # until the lease runs out.
    first = journal.claim_due_deliveries(T0, at(120))
    assert [d.alert_id for d in first] == [1]
    assert journal.claim_due_deliveries(T0, at(120)) == []
    # Alert 2's window ends at 10 s, but the recipient's alerts go in order: not before
    # alert 1 is sent or its lease (another sender's) runs out.
    assert journal.next_delivery_at() == at(120)
    assert journal.claim_due_deliveries(at(10), at(130)) == []
    assert [d.id for d in journal.claim_due_deliveries(at(120), at(240))] == [
        first[0].id, first[0].id + 1]
    journal.delivery_sent(first[0].id, at(121))
    assert journal.claim_due_deliveries(at(999), at(1200))[0].alert_id == 2
    assert journal.alert_backlog() == 1
    journal.close()


def test_smtp_passwords_never_cross_a_network_in_the_clear() -> None:
    with pytest.raises(ValueError, match="STARTTLS"):
        SmtpMailer("mail.maple.example", 587, tls=SmtpTls.NONE, username="u", password="p")
    SmtpMailer("127.0.0.1", 2525, tls=SmtpTls.NONE, username="u", password="p")
    SmtpMailer("mail.maple.example", 587, tls=SmtpTls.STARTTLS, username="u", password="p")


# -- the real thing -----------------------------------------------------------------------------


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with AlertSite(tmp_path) as s:
        yield s


def text_part(received: Received) -> str:
    message = received.message()
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def link_in(received: Received) -> str:
    found = LINK.findall(text_part(received))
    assert len(found) == 1, text_part(received)
    return str(found[0])


async def listed_on(site: Site, received: Received) -> int:
    """How many attempts the page behind an email's link lists."""
    async with aiohttp.ClientSession() as http, http.get(link_in(received)) as response:
        assert response.status == 200
        return (await response.text()).count("<section>")


def by_recipient(received: list[Received]) -> Counter[str]:
    return Counter(r for m in received for r in m.rcpt_tos)


async def test_every_recipient_hears_of_an_outage_attempt_at_once(site: Site) -> None:
    """The first attempt is alerted by the round it wakes, with the clock where the attempt
    left it: no gather window is waited out.  (How long the machinery takes on this machine
    is bench/alerts.py's to measure.)"""
    await site.engage()
    at = site.clock()
    assert await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
    emails = await site.sink.wait_for(EMAILS, within=30)
    texts = await site.gateway.wait_for_sent(len(ALERT_SMS), within=30)
    await site.notifier.settle()  # the sends are journaled
    assert site.clock() == at  # the clock never moved: sent before any window could end
    assert site.journal is not None
    deliveries = site.journal.alert_deliveries()
    assert len(deliveries) == EMAILS + len(ALERT_SMS)
    assert {(d.state, d.tries, d.alert_due_at, d.sent_at) for d in deliveries} == {
        (AlertState.SENT, 1, at, at)}  # due at the attempt, each sent at its first try
    assert len({d.alert_id for d in deliveries}) == 1
    assert sorted(r for m in emails for r in m.rcpt_tos) == sorted(ALERT_EMAILS)
    assert [t.to for t in texts] == list(ALERT_SMS)
    assert texts[0].sender == PRACTICE_NUMBER and "Check your email" in texts[0].body
    ids = {m.message()["Message-ID"] for m in emails}
    assert len(ids) == EMAILS  # an alert id (and Message-ID) per recipient
    assert {m.message()["Subject"] for m in emails} == {
        f"Backup alert: new inbound activity for {PRACTICE_NAME}"}
    # Each recipient has a link of their own, and each opens the attempt.
    assert len({link_in(m) for m in emails}) == EMAILS
    assert [await listed_on(site, m) for m in emails] == [1] * EMAILS

    # Not alerted: a refused attempt (not the practice's number, a forged webhook) and
    # anything in normal mode.  A quiet minute first, so an alert would go at once.
    site.clock.advance(120)
    await site.record(AttemptKind.CALL, "+17205550142", "+13125550111",
                      outcome=Outcome.REFUSED)
    await site.record(AttemptKind.CALL, "+17205550143", PRACTICE_NUMBER, mode=Mode.NORMAL,
                      outcome=Outcome.RANG)
    await site.notifier.settle()
    site.clock.advance(3600)
    await site.notifier.settle()
    assert len(site.sink.received) == EMAILS and len(site.gateway.sent) == len(ALERT_SMS)


async def test_a_burst_of_fifty_attempts_is_gathered_into_two_alerts(site: Site) -> None:
    await site.engage()
    started = time.monotonic()
    for i in range(50):
        kind = (AttemptKind.CALL, AttemptKind.SMS, AttemptKind.FAX)[i % 3]
        await site.record(kind, f"+1720555{i:04d}", PRACTICE_NUMBER, text="hello")
        site.clock.advance(0.1)
    await site.notifier.settle()  # all gathered before the clock moves on
    first = await site.sink.wait_for(EMAILS)
    print(f"\nburst: first alert in {(time.monotonic() - started) * 1000:.0f} ms after the "
          "first of 50 attempts")
    assert [await listed_on(site, m) for m in first] == [1] * EMAILS
    await site.notifier.settle()
    assert len(site.sink.received) == EMAILS  # the rest wait for the window to end

    site.clock.advance(10)
    site.notifier.wake()
    all_ = await site.sink.wait_for(2 * EMAILS)
    await site.gateway.wait_for_sent(2 * len(ALERT_SMS))
    assert [await listed_on(site, m) for m in all_[EMAILS:]] == [49] * EMAILS
    assert by_recipient(all_) == {e: 2 for e in ALERT_EMAILS}

    # A quiet spell resets the window: the next attempt is alerted at once.
    site.clock.advance(600)
    await site.record(AttemptKind.CALL, "+17205559999", PRACTICE_NUMBER)
    await site.sink.wait_for(3 * EMAILS)


async def test_an_alert_sent_after_the_outage_ended_speaks_of_the_outage_as_past(
        site: Site) -> None:
    await site.engage()
    assert await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
    await site.sink.wait_for(EMAILS)
    assert await site.record(AttemptKind.SMS, "+17205550142", PRACTICE_NUMBER, text="hi")
    await site.notifier.settle()  # gathered: it waits for the window's end
    assert site.controller is not None
    await site.controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
    site.clock.advance(10)
    site.notifier.wake()
    after = (await site.sink.wait_for(2 * EMAILS))[EMAILS:]
    for received in after:
        text = " ".join(text_part(received).split())
        assert "is in backup" not in text
        assert "came in while the phone system was in backup (outage) mode" in text
        html = received.message().get_body(("html",))
        assert isinstance(html, EmailMessage) and "is in backup" not in html.get_content()


async def test_the_status_page_says_whether_alerts_are_getting_through(site: Site) -> None:
    async def alerts() -> dict[str, str]:
        async with aiohttp.ClientSession() as http, \
                http.get(f"{site.status_url}/status.json") as response:
            return dict((await response.json())["health"]["alerts"])

    assert (await alerts())["verdict"] == "idle"
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
    await site.sink.wait_for(EMAILS)
    await site.gateway.wait_for_sent(len(ALERT_SMS))
    await site.notifier.settle()
    now = await alerts()
    assert now["verdict"] == "ok" and now["says"] == "alerts are being delivered"
    assert now["last_success"] and now["last_error"] is None
    await site.sink.stop()
    try:
        site.clock.advance(600)  # a quiet spell: the next attempt is alerted at once
        await site.record(AttemptKind.CALL, "+17205550142", PRACTICE_NUMBER)
        await site.notifier.settle()
        now = await alerts()
        assert now["verdict"] == "failing"
        assert now["says"] == "alerts are not getting through by email"
        assert str(now["last_error"]).startswith("email: ") and now["last_error_at"]
    finally:
        await site.sink.start()
    site.clock.advance(retry.retry_delay(1))
    site.notifier.wake()
    await site.sink.wait_for(2 * EMAILS)
    await site.notifier.settle()
    assert (await alerts())["verdict"] == "ok"


SECRETS = {
    "caller number": "+17205550141",
    "SMS sender": "+17735550188",
    "fax sender": "+18475550123",
    "caller name": "Janette Quillfeather",
    "SMS text": "refill my lisinopril 20mg, DOB 1961-04-12",
    "fax station ID": "ONCOLOGY ASSOC 847",
}


def spellings(value: str) -> list[str]:
    """The ways a number or name could show up: as given, its digits, the national ten
    digits formatted, the last seven, lower-cased words."""
    out = [value, value.lower()]
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 10:
        national = digits[-10:]
        out += [digits, national, f"({national[:3]}) {national[3:6]}-{national[6:]}",
                f"{national[:3]}-{national[3:6]}-{national[6:]}", national[3:]]
    out += [w.lower() for w in value.split() if len(w) > 4 and not w.isdigit()]
    return out


def everything_in(received: Received) -> str:
    """The raw bytes plus every header and MIME part decoded: nothing left out."""
    message = received.message()
    parts = [received.raw.decode("utf-8", "replace")]
    for part in message.walk():
        parts += [f"{k}: {v}" for k, v in part.items()]
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode("utf-8", "replace"))
    return "\n".join(parts).lower()


async def test_no_alert_and_no_log_line_holds_patient_data(
        site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await site.engage()
    fax = tmp_path / "fax.pdf"
    fax.write_bytes(b"%PDF-1.4 stand-in")
    await site.record(AttemptKind.CALL, SECRETS["caller number"], PRACTICE_NUMBER,
                      detail=f"caller name: {SECRETS['caller name']}")
    await site.record(AttemptKind.SMS, SECRETS["SMS sender"], PRACTICE_NUMBER,
                      text=SECRETS["SMS text"])
    await site.record(AttemptKind.FAX, SECRETS["fax sender"], FAX_NUMBER, file=str(fax),
                      detail=f"station ID: {SECRETS['fax station ID']}")
    await site.notifier.settle()  # all three gathered before the clock moves on
    site.clock.advance(10)
    await site.notifier.settle()
    emails = await site.sink.wait_for(2 * EMAILS)
    texts = await site.gateway.wait_for_sent(2 * len(ALERT_SMS))
    # The page does show them (so the scan below is not vacuous).
    pages = await fetch(link_in(emails[0])) + await fetch(link_in(emails[-1]))
    assert [k for k, v in SECRETS.items() if v not in pages] == []
    haystacks = {f"email {i} to {m.rcpt_tos[0]}": everything_in(m) for i, m in enumerate(emails)}
    haystacks |= {f"SMS {i}": t.body.lower() for i, t in enumerate(texts)}
    # Every log line but the test SMTP server's own (aiosmtpd logs the DATA it receives at
    # DEBUG: that is the mail system's side, whose content the email scan covers).
    ours = "\n".join(f"{r.name} {r.getMessage()} {vars(r)}" for r in caplog.records
                     if r.name != "mail.log")
    haystacks["the logs"] = ours.lower()
    for what, secret in SECRETS.items():
        for spelling in spellings(secret):
            for where, text in haystacks.items():
                assert spelling.lower() not in text, f"{what} ({spelling!r}) in {where}"
    # Nor the links' tokens.
    for m in emails:
        assert link_in(m).rsplit("/", 1)[1] not in ours


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()


async def burst_with_smtp_down(site: Site, *, restart: bool) -> None:
    """50 attempts; the SMTP server goes down after the 10th and comes back later; with
    ``restart`` the controller is replaced (same journal) while it is down.  The SMS gateway
    fails too (a 503 and a 400), and the SMS must still go, once."""
    await site.engage()
    for i in range(10):
        await site.record(AttemptKind.CALL, f"+1720555{i:04d}", PRACTICE_NUMBER)
    await site.sink.wait_for(EMAILS)  # the first alert is out before the server goes
    await site.gateway.wait_for_sent(len(ALERT_SMS))
    await site.sink.stop()
    site.gateway.fail_next(1, 503)
    site.gateway.fail_next(1, 400)
    for i in range(10, 50):
        await site.record(AttemptKind.SMS, f"+1720555{i:04d}", PRACTICE_NUMBER, text="hi")
    await site.notifier.settle()  # all gathered before the clock moves on
    site.clock.advance(10)  # the gathered alert falls due: fails (SMTP down, SMS 503)
    await site.notifier.settle()
    site.clock.advance(retry.retry_delay(1))  # the first retry: fails again (SMS 400)
    await site.notifier.settle()
    journal = site.journal
    assert journal is not None
    pending = [d for d in journal.alert_deliveries() if d.state is AlertState.PENDING]
    assert len(pending) == EMAILS + len(ALERT_SMS) and {d.tries for d in pending} == {2}
    assert all(d.last_error for d in pending)
    if restart:
        await site.restart_controller()
    await site.sink.start()
    site.clock.advance(retry.retry_delay(2))
    site.notifier.wake()
    emails = await site.sink.wait_for(2 * EMAILS)
    texts = await site.gateway.wait_for_sent(2 * len(ALERT_SMS))

    # Nothing twice, however long we wait and however often the task runs.
    for _ in range(3):
        site.clock.advance(3600)
        await site.notifier.settle()
    assert len(site.sink.received) == 2 * EMAILS
    # Only the alerts' texts: with ``restart`` the new controller also owes each of the 40
    # outage SMS its automatic reply (journaled here without one), which it may be sending
    # by now through the same gateway; those are not alerts.
    assert len([t for t in site.gateway.sent if t.to in ALERT_SMS]) == 2 * len(ALERT_SMS)
    assert by_recipient(emails) == {e: 2 for e in ALERT_EMAILS}
    assert Counter(t.to for t in texts) == {n: 2 for n in ALERT_SMS}
    # The Message-IDs are those fixed in the journal before the first try, one per
    # alert and recipient.
    journal = site.journal
    assert journal is not None
    deliveries = journal.alert_deliveries()
    assert {d.state for d in deliveries} == {AlertState.SENT}
    sent_ids = {d.message_id for d in deliveries if d.recipient in ALERT_EMAILS}
    assert sorted(str(m.message()["Message-ID"]) for m in emails) == sorted(sent_ids)
    # None lost: the two alerts list all 50 attempts (1 + 49), and every link opens, the
    # late ones included (each link is minted when its email finally goes).
    assert [await listed_on(site, m) for m in emails] == [1] * EMAILS + [49] * EMAILS


async def test_smtp_and_gateway_down_during_a_burst_nothing_lost_or_sent_twice(
        site: Site) -> None:
    await burst_with_smtp_down(site, restart=False)


async def test_the_same_with_a_controller_restart_while_down(site: Site) -> None:
    await burst_with_smtp_down(site, restart=True)


async def test_a_recipients_alerts_go_in_order_after_an_smtp_outage(site: Site) -> None:
    """Alert 1 has failed more often than alert 2, so its own retry falls due later: when
    the server is back, alert 2 must still not go before it (each recipient's in order)."""
    await site.engage()
    await site.sink.stop()
    await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)  # alert 1, at once
    await site.notifier.settle()  # try 1 fails
    for failures in (1, 2):
        site.clock.advance(retry.retry_delay(failures))
        await site.notifier.settle()  # tries 2 and 3 fail: the next waits 20 s
    site.clock.advance(1)
    # A quiet window has passed: alert 2 is made due at once, ahead of alert 1's next try.
    await site.record(AttemptKind.CALL, "+17205550142", PRACTICE_NUMBER)
    await site.notifier.settle()
    await site.sink.start()
    site.clock.advance(retry.retry_delay(1))  # alert 2's own retry time, were it tried
    await site.notifier.settle()
    site.clock.advance(retry.retry_delay(3))  # alert 1's next try: everything is due
    await site.notifier.settle()
    emails = await site.sink.wait_for(2 * EMAILS)
    assert site.journal is not None
    alert_of = {d.message_id: d.alert_id for d in site.journal.alert_deliveries()}
    order: dict[str, list[int]] = {}
    for m in emails:
        order.setdefault(m.rcpt_tos[0], []).append(alert_of[str(m.message()["Message-ID"])])
    first, second = sorted(set(alert_of.values()))
    assert order == {e: [first, second] for e in ALERT_EMAILS}
    assert [await listed_on(site, m) for m in emails] == [1] * (2 * EMAILS)


async def test_a_4xx_from_the_smtp_server_is_retried_with_the_same_message_id(
        site: Site) -> None:
    site.sink.refuse_next(3)
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
    await site.notifier.settle()
    assert site.sink.refusals >= 1
    for failures in range(1, 4):
        site.clock.advance(retry.retry_delay(failures))
        await site.notifier.settle()
    emails = await site.sink.wait_for(EMAILS)
    assert site.sink.refusals == 3
    assert site.journal is not None
    ids = {d.recipient: d.message_id for d in site.journal.alert_deliveries()}
    assert {m.rcpt_tos[0]: m.message()["Message-ID"] for m in emails} == {
        e: ids[e] for e in ALERT_EMAILS}
    assert [await listed_on(site, m) for m in emails] == [1] * EMAILS


async def test_an_attempt_journaled_just_before_a_crash_is_alerted_after_the_restart(
        site: Site) -> None:
    await site.engage()
    await site.stop_controller()
    # The controller died between journaling the attempt and gathering it: the journal has
    # it, no alert lists it.
    journal = open_journal(f"sqlite://{site.tmp / 'journal.db'}")
    journal.record_attempt(NewAttempt(
        key="call:crash", at=site.clock(), kind=AttemptKind.CALL, mode=Mode.OUTAGE,
        sender="+17205550141", recipient=PRACTICE_NUMBER, outcome=Outcome.ANNOUNCED,
        delivery=Delivery.HELD))
    journal.close()
    await site.start_controller()
    emails = await site.sink.wait_for(EMAILS)
    assert [await listed_on(site, m) for m in emails] == [1] * EMAILS
