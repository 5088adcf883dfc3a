"""Voicemail without a PBX: a message's text file read as untrusted data, a recording's length,
the dialplan's report of a call's end, the config keys, and the voicemail link page on a real
SQLite journal with a clock moved by hand (open for ``link_hours``, then nothing)."""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backline.app import config
from backline.core.decisions import (
    InboundCall,
    InboundDecision,
    PlayAnnouncement,
    PlayClosedAnnouncement,
    RefuseUnknownNumber,
    RingDeskPhones,
    SendToVoicemail,
)
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome
from backline.core.refusals import DEFAULT_PER_MINUTE, RefusalTally
from backline.core.voicemail import (
    HungUp,
    NotAMessage,
    call_end_from_args,
    caller_number,
    greeting_of,
    missed_at_hangup,
    parse_message,
    wav_seconds,
)
from backline.features.alerts.service import mailer_for
from backline.features.links import tokens as links
from backline.features.links.voicemail_server import make_voicemail_app
from backline.features.refusal_gate import RefusalGate
from backline.features.voicemail.emails import VoicemailEmails
from backline.journal import open_journal
from backline.journal.voicemail import EmailState
from backline.localpbx.announcement import render_greeting_clips
from tests.harness.postgres import JournalBackend
from tests.harness.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = """\
;
; Message Information file
;
[message]
origmailbox=3125550102
context=backline-voicemail
callerchan=PJSIP/carrier-0000000a
callerid="Janette Quillfeather" <+17205550141>
origtime=1796431304
msg_id=1796431304-0000000a
duration=12
"""


def test_a_message_file_keeps_the_callers_number_and_never_their_name() -> None:
    m = parse_message(MESSAGE, "3125550102")
    assert (m.msg_id, m.box, m.caller, m.channel, m.seconds) == (
        "1796431304-0000000a", "3125550102", "+17205550141", "PJSIP/carrier-0000000a", 12)
    assert m.at == datetime.fromtimestamp(1796431304, UTC)
    assert caller_number("Unknown") == "" and caller_number("+17205550141") == "+17205550141"


@pytest.mark.parametrize(("text", "box"), [
    (MESSAGE.replace("msg_id=1796431304-0000000a", "msg_id=../../etc"), "3125550102"),
    (MESSAGE.replace("origtime=1796431304", "origtime=soon"), "3125550102"),
    (MESSAGE, "../3125550102"),
    (MESSAGE + ";" * 9000, "3125550102"),
    ("[message]\n", "3125550102"),
])
def test_a_text_file_that_is_not_a_whole_message_is_refused(text: str, box: str) -> None:
    with pytest.raises(NotAMessage):
        parse_message(text, box)


def test_an_odd_channel_in_a_message_is_dropped_not_kept() -> None:
    odd = MESSAGE.replace("PJSIP/carrier-0000000a", "PJSIP/x\x00y<script>")
    assert parse_message(odd, "3125550102").channel == ""


def wav(frames: int, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * frames)
    return out.getvalue()


def test_a_recordings_length_is_read_from_its_chunks() -> None:
    assert wav_seconds(wav(8000 * 3)) == 3.0
    assert wav_seconds(wav(4000)) == 0.5
    # A caller who hung up mid-write leaves a data size larger than the bytes: the bytes win.
    assert wav_seconds(wav(8000)[:-8000]) == 0.5
    for junk in (b"", b"RIFF", b"%PDF-1.4", wav(8000)[:40]):
        with pytest.raises(ValueError):
            wav_seconds(junk)


def test_a_call_end_that_is_not_ours_is_refused() -> None:
    end = call_end_from_args("1796431296.0", "PJSIP/carrier-00000000",
                             ["3125550102", "+17205550141", "voicemail"])
    assert end is not None and end.voicemail and end.box == "3125550102"
    assert call_end_from_args("1.0", "PJSIP/c-1", ["3125550102", "", "ringing"]) is not None
    for args in (["../x", "", "voicemail"], ["3125550102", "", "hangup"], []):
        assert call_end_from_args("1.0", "PJSIP/c-1", args) is None


NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
RING = RingDeskPhones("+13125550100", ("sam-p0",), ("sam",), (("sam-p0", "c"),), 25,
                      "3125550100")


@pytest.mark.parametrize(("decision", "answered", "message_left", "missed"), [
    (RING, False, False, True),
    (RING, True, False, False),  # a desk phone took it
    (RING, False, True, False),  # the message is the item
    (SendToVoicemail("+13125550100", "3125550100"), False, False, True),
    (PlayClosedAnnouncement("+13125550100", "3125550100"), False, False, True),
    (PlayClosedAnnouncement("+13125550100", "3125550100"), False, True, False),
    (PlayAnnouncement("+13125550100"), False, False, False),  # an outage: no voicemail
    (RefuseUnknownNumber("+13125550199"), False, False, False),
])
def test_a_hangup_is_a_missed_call_only_when_sent_to_ring_or_voicemail_untaken_and_silent(
        decision: InboundDecision, answered: bool, message_left: bool, missed: bool) -> None:
    call = InboundCall(dialed="+13125550100", caller="+17205550141")
    attempt = missed_at_hangup(decision, call, "u-1", HungUp(answered, message_left), NOW)
    if not missed:
        assert attempt is None
        return
    assert attempt is not None
    assert (attempt.key, attempt.kind, attempt.outcome, attempt.sender, attempt.recipient,
            attempt.at, attempt.delivery) == (
        "missed:u-1", AttemptKind.CALL, Outcome.MISSED, "+17205550141", "+13125550100", NOW,
        Delivery.HELD)


def check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "backline.app.cli", "check", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_voicemail_keys_are_checked_at_their_line(tmp_path: Path) -> None:
    text = ("practice: {name: P, timezone: UTC}\n"
            "users:\n"
            "  - {id: ana, name: Ana, email: ana@x.example, voicemail_email: maybe}\n"
            "numbers:\n"
            "  - {number: '+13125550100', voicemail_box: '12a'}\n"
            "  - {number: '+13125550101', voicemail_greeting: {text: Hi, file: hi.wav}}\n"
            "connections: {storage: {url: 'sqlite:j.db'}}\n")
    result = check(text, tmp_path)
    assert result.returncode == 2
    assert ":3: users[0].voicemail_email: true or false" in result.stderr, result.stderr
    assert ":5: numbers[0].voicemail_box: a voicemail box number (digits only)" in \
        result.stderr
    assert ":6: numbers[1].voicemail_greeting: exactly one of text:" in result.stderr
    fixed = (text.replace("maybe", "true").replace("'12a'", "'120'")
             .replace("text: Hi, file: hi.wav", "text: Hello"))
    assert check(fixed, tmp_path).returncode == 0


async def test_a_voicemail_link_opens_for_its_hours_then_nothing_and_is_audited(
        tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path / 'journal.db'}")
    recording = tmp_path / "voicemail-1.wav"
    recording.write_bytes(wav(8000 * 2))
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    now = [t0]
    message, _ = journal.record_attempt(NewAttempt(
        key="voicemail:1-a", at=t0, kind=AttemptKind.VOICEMAIL, mode=Mode.NORMAL,
        sender="+17205550141", recipient="+13125550102", outcome=Outcome.VOICEMAIL,
        file=str(recording), delivery=Delivery.HELD))
    journal.owe_voicemail_emails(message.id, [("sam", "sam@x.example")], t0)
    [email] = journal.voicemail_emails()
    token = links.new_token()
    journal.add_voicemail_link(email.id, message.id, links.token_hash(token), t0,
                               links.expiry(t0, 12))
    app = make_voicemail_app(journal, "Test Family Medicine", "America/Chicago",
                             lambda: now[0])
    try:
        async with TestClient(TestServer(app)) as http:
            page = await http.get(f"/{token}")
            assert page.status == 200
            html = await page.text()
            assert "+17205550141" in html and "2 s" in html and f'src="{token}/audio"' in html
            assert "media-src 'self'" in page.headers["Content-Security-Policy"]
            audio = await http.get(f"/{token}/audio")
            assert (audio.status, audio.headers["Content-Type"]) == (200, "audio/wav")
            assert await audio.read() == recording.read_bytes()
            now[0] = t0 + timedelta(hours=12)
            gone = [await http.get(f"/{token}"), await http.get(f"/{token}/audio"),
                    await http.get(f"/{links.new_token()}")]
            bodies = {await r.text() for r in gone}
            assert [r.status for r in gone] == [404, 404, 404] and len(bodies) == 1
            assert "+17205550141" not in bodies.pop()
        actions = [(e.action, e.detail) for e in journal.audit_log()]
        assert sorted(a for a, _ in actions) == sorted([
            "voicemail.view", "voicemail.listen", "voicemail.view.refused",
            "voicemail.listen.refused", "voicemail.view.refused"])
        assert not any(token in d for _, d in actions)
    finally:
        journal.close()


async def test_an_expired_voicemail_link_asked_for_again_and_again_is_audited_once_a_minute(
        tmp_path: Path) -> None:
    """A client asking for an expired voicemail link over and over (page and audio): 404 each
    time up to the limit, one audit row per minute for each, the rest only counted."""
    journal = open_journal(f"sqlite://{tmp_path / 'journal.db'}")
    recording = tmp_path / "voicemail-1.wav"
    recording.write_bytes(wav(8000))
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    now = [t0]
    message, _ = journal.record_attempt(NewAttempt(
        key="voicemail:1-a", at=t0, kind=AttemptKind.VOICEMAIL, mode=Mode.NORMAL,
        sender="+17205550141", recipient="+13125550102", outcome=Outcome.VOICEMAIL,
        file=str(recording), delivery=Delivery.HELD))
    journal.owe_voicemail_emails(message.id, [("sam", "sam@x.example")], t0)
    [email] = journal.voicemail_emails()
    token = links.new_token()
    journal.add_voicemail_link(email.id, message.id, links.token_hash(token), t0,
                               links.expiry(t0, 12))
    tally = RefusalTally()
    app = make_voicemail_app(journal, "Test Family Medicine", "America/Chicago",
                             lambda: now[0], RefusalGate(tally, lambda: now[0]))
    try:
        now[0] = t0 + timedelta(hours=12)
        async with TestClient(TestServer(app)) as http:
            statuses = []
            for _ in range(DEFAULT_PER_MINUTE // 2):
                for path in (f"/{token}", f"/{token}/audio"):
                    statuses.append((await http.get(path)).status)
            assert statuses == [404] * (DEFAULT_PER_MINUTE // 2 * 2)
        actions = sorted(e.action for e in journal.audit_log())
        assert actions == ["voicemail.listen.refused", "voicemail.view.refused"]
        assert sorted((c.action, c.count) for c in tally.take()) == [
            ("voicemail.listen.expired", DEFAULT_PER_MINUTE // 2),
            ("voicemail.view.expired", DEFAULT_PER_MINUTE // 2)]
    finally:
        journal.close()


def test_each_voice_number_gets_its_greeting_spoken_or_recorded(tmp_path: Path) -> None:
    recorded = tmp_path / "hello.wav"
    with wave.open(str(recorded), "wb") as w:  # 16 kHz: converted to Asterisk's 8 kHz
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x10" * 16000 * 2)
    path = tmp_path / "p.yaml"
    path.write_text(
        "practice: {name: Test Family Medicine, timezone: UTC}\n"
        "numbers:\n"
        "  - {number: '+13125550100', caller_id_name: Test Main}\n"
        "  - {number: '+13125550101', voicemail_greeting: {file: hello.wav}}\n"
        "  - {number: '+13125550102', voicemail_greeting: {text: Leave a message.}}\n"
        "  - {number: '+13125550109', carries: [fax]}\n"
        "connections: {storage: {url: 'sqlite:j.db'}}\n")
    directory = config.load(path).directory
    assert greeting_of(directory.numbers[0], "P").text.startswith("You have reached Test Main.")
    clips = render_greeting_clips(directory, tmp_path / "sounds")
    assert [c.name for c in clips] == ["greeting-3125550100.wav", "greeting-3125550101.wav",
                                       "greeting-3125550102.wav"]  # no fax-only number
    for clip in clips:
        with wave.open(str(clip)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
            seconds = w.getnframes() / w.getframerate()
        if clip.name == "greeting-3125550101.wav":
            assert abs(seconds - 2.0) < 0.01  # the recording, as long as it was
        else:
            assert seconds > 1.0  # spoken


async def test_a_voicemail_email_waits_for_the_relay_and_is_sent_once_across_a_restart(
        tmp_path: Path) -> None:
    sink = SmtpSink()
    await sink.start()
    await sink.stop()  # its port known, the relay down when the message comes
    path = tmp_path / "p.yaml"
    path.write_text(
        "practice: {name: Test Family Medicine, timezone: UTC}\n"
        "users:\n"
        "  - {id: sam, name: Sam, email: sam@x.example, voicemail_email: true}\n"
        "  - {id: jo, name: Jo, email: jo@x.example}\n"
        "teams: [{id: desk, name: Desk, members: [sam, jo]}]\n"
        "numbers: [{number: '+13125550102', owner: team:desk, caller_id_name: Sched}]\n"
        "connections:\n"
        f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
        "from: backline@x.example}\n"
        "  pages: {listen: '127.0.0.1:1', base_url: 'https://b.x.example'}\n"
        f"  storage: {{url: 'sqlite://{tmp_path / 'journal.db'}'}}\n")
    directory = config.load(path).directory
    journal = open_journal(directory.connections.storage.url)
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    now = [t0]

    def service() -> VoicemailEmails:
        return VoicemailEmails(directory, journal, OwnershipBook(directory),
                               mailer_for(directory, "voicemail email"), lambda: now[0])

    emails = service()
    try:
        journal.record_attempt(NewAttempt(
            key="voicemail:1-a", at=t0, kind=AttemptKind.VOICEMAIL, mode=Mode.NORMAL,
            sender="+17205550141", recipient="+13125550102", outcome=Outcome.VOICEMAIL,
            file=str(tmp_path / "v.wav"), delivery=Delivery.HELD))
        emails.start()
        await emails.settle()
        [owed] = journal.voicemail_emails()  # sam only: jo did not opt in
        assert (owed.user_id, owed.state, owed.tries) == ("sam", EmailState.PENDING, 1)
        await sink.start()  # the relay is back; the retry falls due
        now[0] = t0 + timedelta(seconds=10)
        await emails.settle()
        [received] = await sink.wait_for(1)
        assert received.rcpt_tos == ("sam@x.example",)
        assert "/v/" in received.raw.decode() and "7205550141" not in received.raw.decode()
        await emails.close()
        # A restart (a new service on the same journal, later): nothing is sent twice.
        emails = service()
        now[0] = t0 + timedelta(hours=1)
        emails.start()
        await emails.settle()
        assert len(sink.received) == 1
        assert [e.state for e in journal.voicemail_emails()] == [EmailState.SENT]
        sent = [e for e in journal.audit_log() if e.action == "voicemail.email.sent"]
        assert [e.detail for e in sent] == ["voicemail:1-a user:sam"]
    finally:
        await emails.close()
        await sink.stop()
        journal.close()


def test_voicemail_emails_are_owed_once_and_claimed_by_one_controller(
        journal_backend: JournalBackend) -> None:
    first, second = open_journal(journal_backend.url), open_journal(journal_backend.url)
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    try:
        message, _ = first.record_attempt(NewAttempt(
            key="voicemail:1-a", at=t0, kind=AttemptKind.VOICEMAIL, mode=Mode.NORMAL,
            sender="+17205550141", recipient="+13125550102", outcome=Outcome.VOICEMAIL,
            file="/nowhere.wav", delivery=Delivery.HELD))
        assert [a.key for a in first.voicemail_unconsidered(t0, 0)] == ["voicemail:1-a"]
        told = [("sam", "sam@x.example"), ("raj", "raj@x.example")]
        assert first.owe_voicemail_emails(message.id, told, t0) == 2
        assert second.owe_voicemail_emails(message.id, told, t0) == 0  # once per member
        assert first.voicemail_unconsidered(t0, 0) == []
        lease = t0 + timedelta(minutes=2)
        claimed = first.claim_due_voicemail_emails(t0, lease)
        assert sorted(e.user_id for e in claimed) == ["raj", "sam"]
        assert second.claim_due_voicemail_emails(t0, lease) == []  # leased to the first
        assert second.next_voicemail_email_at() == lease
        sam = next(e for e in claimed if e.user_id == "sam")
        first.voicemail_email_sent(sam.id, t0)
        raj = next(e for e in claimed if e.user_id == "raj")
        first.voicemail_email_failed(raj.id, t0 + timedelta(seconds=5), "relay down")
        [again] = second.claim_due_voicemail_emails(t0 + timedelta(seconds=5), lease)
        assert (again.user_id, again.tries, again.attempt.key) == ("raj", 1, "voicemail:1-a")
        token_hash = links.token_hash(links.new_token())
        first.add_voicemail_link(sam.id, message.id, token_hash, t0, t0 + timedelta(hours=12))
        link = second.voicemail_link(token_hash)
        assert link is not None and link.attempt_id == message.id
        assert second.voicemail_message(link.attempt_id) == message
        assert second.voicemail_link(links.token_hash("guess")) is None
    finally:
        first.close()
        second.close()
