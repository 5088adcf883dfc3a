"""Emergency calls (backline/core/emergency.py) on the real Asterisk: the callback number and the
practice's name on every 911 from every desk phone, in every mode and with the controller
gone; the on-site notice by email, SMS and desk phone, once, late if it must be; the location
with the call where the trunk sends it; and ``check`` refusing a desk phone with no callback
number or location.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backline.app import config
from backline.core.conversations import ConversationBook
from backline.core.decisions import PlaceEmergencyCall
from backline.core.dialling import dialled
from backline.core.emergency import EmergencyCall, caller_id_name, emergency_caller, notice
from backline.core.outage import Mode, Via
from backline.core.ownership import OwnershipBook
from backline.core.routing import decide_outbound
from backline.features import emergency_notices
from backline.journal import open_journal
from backline.journal.emergency import EmergencyNotice, NoticeState
from tests.harness.backline_process import ControllerProcess
from tests.harness.practice_pbx import (
    PracticePbx,
    emergency_with_notice,
    practice_pbx,
)
from tests.harness.sipp import (
    DeskPhoneMode,
    SipMessage,
    SippProcess,
    answering_phone,
    desk_phone,
    place_calls,
)
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, TwilioGateway
from tests.harness.smtp_sink import SmtpSink

MAIN, ANA_LINE, SCHED = "+13125550100", "+13125550101", "+13125550102"
PRACTICE_CID = "Test Family"  # "Test Family Medicine" cut at a word to 15 characters
NOTIFY_EMAIL, NOTIFY_SMS = "ops@t.example", "+13125550199"
SMS_TOKEN_ENV = "BACKLINE_TEST_EMERGENCY_SMS_TOKEN"

# What each desk phone presents: its own number (sam-exam), its user's (ana), else the main
# line; and where it is.
EXPECTED = {
    "ana-desk": (ANA_LINE, "exam"), "raj-desk": (MAIN, "front"), "sam-desk": (MAIN, "front"),
    "sam-exam": (SCHED, "annex"), "jo-desk": (MAIN, "front"), "mia-desk": (MAIN, "front"),
}
PEOPLE = ("Ana", "Raj", "Sam", "Jo", "Mia", "Lee", "Patel", "Ortiz", "Kim", "Chen")
EXTENSIONS = ("101", "102", "111", "112", "121")


def sip(p: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", p.ports.sip)


def carrier(p: PracticePbx, tmp: Path) -> SippProcess:
    return answering_phone(tmp, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                           port=p.ports.trunk, talk_ms=200)


async def dial(p: PracticePbx, tmp: Path, phone: str, digits: str) -> None:
    proc = place_calls(sip(p), tmp, digits, from_user=phone, password=p.secret(phone),
                       timeout=30)
    result = await asyncio.to_thread(proc.wait, 30)
    assert result.ok, proc.describe()


def user_part(header: str) -> str:
    """``"Name" <sip:+1312...@host>;tag=x`` → ``+1312...``."""
    return header.split("<sip:", 1)[1].split("@", 1)[0]


def display_name(header: str) -> str:
    return header.split("<", 1)[0].strip().strip('"')


def assert_presents(invite: SipMessage, number: str, digits: str = "911") -> None:
    """The carrier sees the callback number and the practice's name, in From and PAI, and
    nothing of the person or their extension."""
    assert invite.start_line.startswith(f"INVITE sip:{digits}@"), invite.start_line
    for name in ("From", "P-Asserted-Identity"):
        value = invite.header(name) or ""
        assert user_part(value) == number, (name, value)
        assert display_name(value) == PRACTICE_CID, (name, value)
        assert not any(p in value for p in PEOPLE), (name, value)
        assert not any(f"<sip:{e}@" in value for e in EXTENSIONS), (name, value)


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    name = "e-" + request.node.name[5:30]
    async with practice_pbx(tmp_path, name, ring_seconds=5) as p:
        yield p


async def test_every_desk_phone_presents_its_callback_number_in_every_mode(
        pbx: PracticePbx, tmp_path: Path) -> None:
    far = carrier(pbx, tmp_path)
    try:
        sent = 0
        for stage in ("normal", "outage", "controller gone"):
            if stage == "outage":
                await pbx.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI,
                                            reason="drill")  # journal, then the PBX
                assert "outage" in pbx.instance.cli("database get backline mode")
            elif stage == "controller gone":
                await pbx.driver.stop()  # FastAGI and AMI closed: nobody answers the PBX
            for phone, (number, _) in EXPECTED.items():
                await dial(pbx, tmp_path, phone, "911")
                sent += 1
                invites = await asyncio.to_thread(far.wait_for_invites, sent, 30)
                assert_presents(invites[-1], number)
        # 933, the address read-back line, is an emergency number too.
        await dial(pbx, tmp_path, "ana-desk", "933")
        invites = await asyncio.to_thread(far.wait_for_invites, sent + 1, 30)
        assert_presents(invites[-1], ANA_LINE, "933")
    finally:
        far.kill()


async def test_the_notice_reaches_email_sms_and_a_desk_phone_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMS_TOKEN_ENV, AUTH_TOKEN)
    # The notices' nap between rounds (30 s, as long as the waits below) made an hour: only
    # the call's wake can send them before those waits, which then only bound a hang.
    monkeypatch.setattr(emergency_notices, "MAX_NAP", 3600.0)
    async with SmtpSink() as sink, TwilioGateway() as gateway:
        extra = (f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
                 "from: backline@t.example}\n"
                 f'  sms_gateway: {{url: "{gateway.base_url}", from: "{MAIN}", '
                 f"account: {ACCOUNT_SID}, token_env: {SMS_TOKEN_ENV}}}\n")
        notify = (f'{{emails: [{NOTIFY_EMAIL}], sms: ["{NOTIFY_SMS}"], '
                  "desk_phones: [raj-desk]}")
        async with practice_pbx(tmp_path, "e-notice", emergency=emergency_with_notice(notify),
                                connections_extra=extra) as pbx:
            pbx.controller.emergency.start()
            far = carrier(pbx, tmp_path)
            raj = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "raj-desk",
                                          pbx.secret("raj-desk"), DeskPhoneMode.ANSWER,
                                          aor="raj")
            try:
                await pbx.driver.wait_registered({"raj"}, within=30)
                await dial(pbx, tmp_path, "ana-desk", "911")
                # "At once": the call wakes the notices (the service would otherwise nap up
                # to MAX_NAP, an hour here, far longer than these waits), each sent on its
                # first try.
                emails = await sink.wait_for(1, within=30)
                texts = await gateway.wait_for_sent(1, within=30)
                calls = pbx.controller.journal.emergency_calls()
                assert len(calls) == 1 and not calls[0].late
                local = calls[0].at.astimezone(ZoneInfo("America/Chicago"))
                when = f"{local:%I:%M %p}".lstrip("0")
                message = emails[0].message()
                assert emails[0].rcpt_tos == (NOTIFY_EMAIL,)
                body = message.get_content() if not message.is_multipart() else ""
                for text in (str(body), texts[0].body):
                    assert "Dr. Ana Lee's desk phone (ana-desk)" in text, text
                    assert "Floor 2, Exam room 2, 1200 W Maple St, Chicago, IL 60607" in text
                    assert f"at {when}" in text, (when, text)
                    assert "911" in text
                assert texts[0].to == NOTIFY_SMS and texts[0].sender == MAIN
                assert "ana-desk" in message["Subject"]
                # raj's desk phone is called and hears who, where, and the time.
                notice_invite = (await asyncio.to_thread(raj.wait_for_invites, 1, 30))[0]
                assert "911 notice" in (notice_invite.header("From") or "")
                played = await pbx.events.wait_for(
                    lambda e: e.get("Context") == "backline-emergency-notice"
                    and e.get("Application") == "SayUnixTime", within=30)
                clips = [e["AppData"] for e in pbx.events.seen
                         if e.get("Context") == "backline-emergency-notice"
                         and e.get("Application") == "Playback"]
                assert clips and clips[0].endswith("/emergency-ana-desk"), clips
                assert played["AppData"].startswith(str(int(calls[0].at.timestamp())))
                notices = await _settled(pbx, 3)
                assert {(n.channel, n.state, n.tries) for n in notices} == {
                    ("email", NoticeState.SENT, 1), ("sms", NoticeState.SENT, 1),
                    ("desk-phone", NoticeState.SENT, 1)}
                sent = pbx.controller.journal.audit_entries("emergency.notice.sent")
                assert len(sent) == 3
                # The 911 call itself went out with its callback number meanwhile.
                invite = (await asyncio.to_thread(far.wait_for_invites, 1, 30))[0]
                assert_presents(invite, ANA_LINE)
                # Ops see it on the status page.
                async with TestClient(TestServer(pbx.controller.status_app())) as http:
                    listed = (await (await http.get("/status.json")).json())["emergency_calls"]
                    page = await (await http.get("/status")).text()
                assert [(c["desk_phone"], c["dialled"], c["late"]) for c in listed] == [
                    ("ana-desk", "911", False)]
                assert listed[0]["location"].startswith("Floor 2, Exam room 2")
                assert "Recent 911 calls" in page and "(ana-desk)" in page
            finally:
                raj.kill()
                far.kill()
                await pbx.controller.emergency.close()


async def test_the_notices_start_after_the_carrier_invite_and_go_when_it_refuses_at_once(
        tmp_path: Path) -> None:
    """DESIGN.md §12: the controller's work for a 911 (journal, notice calls, email) starts
    only once the carrier's INVITE is out (Asterisk's DialBegin for the call, which it
    publishes after writing the INVITE), so it never shares the CPU with sending it; and a
    carrier that refuses at once (503) still leaves the notices to go."""
    notify = "{desk_phones: [raj-desk]}"
    async with practice_pbx(tmp_path, "e-after", emergency=emergency_with_notice(notify)
                            ) as pbx:
        pbx.controller.emergency.start()
        far = answering_phone(tmp_path, DeskPhoneMode.REJECT, name="carrier",
                              port=pbx.ports.trunk, reject_code=503,
                              reject_reason="Service Unavailable")
        raj = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "raj-desk",
                                      pbx.secret("raj-desk"), DeskPhoneMode.ANSWER, aor="raj")
        try:
            await pbx.driver.wait_registered({"raj"}, within=30)
            ana = place_calls(sip(pbx), tmp_path, "911", from_user="ana-desk",
                              password=pbx.secret("ana-desk"), timeout=30)
            await asyncio.to_thread(ana.wait, 30)  # refused: the call fails, as it should
            invite = (await asyncio.to_thread(far.wait_for_invites, 1, 30))[0]
            assert_presents(invite, ANA_LINE)
            (await asyncio.to_thread(raj.wait_for_invites, 1, 30))[0]

            def ana_911(e: dict[str, str]) -> bool:
                return e.get("Channel", "").startswith("PJSIP/ana-desk-") \
                    and e.get("Exten") == "911"

            refused = await pbx.events.wait_for(
                lambda e: e.get("Event") == "DialEnd" and ana_911(e), within=30)
            assert refused["DialStatus"] in ("CONGESTION", "CHANUNAVAIL"), refused
            # Raj's phone has its INVITE; the test's AMI session may not have read that
            # dial's DialBegin yet.
            await pbx.events.wait_for(lambda e: e.get("Event") == "DialBegin"
                                      and "raj-desk" in e.get("DestChannel", ""), within=30)
            order = [("911 out" if ana_911(e) else "notice")
                     for e in pbx.events.named("DialBegin")
                     if ana_911(e) or "raj-desk" in e.get("DestChannel", "")]
            assert order[:2] == ["911 out", "notice"], order
            notices = await _settled(pbx, 1)
            assert [(n.channel, n.recipient, n.state) for n in notices] == [
                ("desk-phone", "raj-desk", NoticeState.SENT)]
        finally:
            raj.kill()
            far.kill()
            await pbx.controller.emergency.close()


async def _settled(p: PracticePbx, count: int) -> list[EmergencyNotice]:
    """The notices, once ``count`` of them are no longer pending (woken per round)."""
    for _ in range(40):
        notices = p.controller.journal.emergency_notices()
        if sum(n.state is not NoticeState.PENDING for n in notices) >= count:
            return notices
        await p.controller.emergency.settle(within=35)
    raise AssertionError(f"notices still pending: {p.controller.journal.emergency_notices()}")


async def test_a_911_placed_while_the_controller_was_killed_is_noticed_once_on_return(
        tmp_path: Path) -> None:
    async with SmtpSink() as sink:
        extra = (f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
                 "from: backline@t.example}\n")
        async with practice_pbx(tmp_path, "e-killed", controller_in_process=False,
                                emergency=emergency_with_notice(f"{{emails: [{NOTIFY_EMAIL}]}}"),
                                connections_extra=extra) as pbx:
            far = carrier(pbx, tmp_path)
            controller = ControllerProcess(pbx)
            try:
                controller.stop(kill=True)  # SIGKILL: no goodbye
                await dial(pbx, tmp_path, "sam-exam", "911")  # the PBX alone sends it out
                invite = (await asyncio.to_thread(far.wait_for_invites, 1, 30))[0]
                assert_presents(invite, SCHED)
                assert sink.received == []
                controller = ControllerProcess(pbx)
                controller.wait_for("emergency call(s) placed while the controller was away", 60)
                emails = await sink.wait_for(1, within=30)
                text = str(emails[0].message().get_content())
                assert "Sam Ortiz's desk phone (sam-exam)" in text
                assert "Suite 300, 45 Oak Ave, Evanston, IL 60201" in text
                # Restarted again, then a new 911: only the new call's notice goes out.
                controller.stop()
                controller = ControllerProcess(pbx)
                await dial(pbx, tmp_path, "mia-desk", "911")
                emails = await sink.wait_for(2, within=30)
                texts = [str(e.message().get_content()) for e in emails]
                assert sum("(sam-exam)" in t for t in texts) == 1, texts
                assert sum("(mia-desk)" in t for t in texts) == 1, texts
                journal = open_journal(pbx.directory.connections.storage.url)
                try:
                    calls = journal.emergency_calls()
                finally:
                    journal.close()
                assert sorted((c.desk_phone, c.late) for c in calls) == [
                    ("mia-desk", False), ("sam-exam", True)]
                assert len(sink.received) == 2
            finally:
                controller.stop(kill=True)
                far.kill()


async def test_with_geolocation_the_invite_carries_the_desk_phones_civic_address(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "e-geo", trunk_extra=", geolocation: true") as pbx:
        far = carrier(pbx, tmp_path)
        try:
            await dial(pbx, tmp_path, "sam-exam", "911")
            await dial(pbx, tmp_path, "ana-desk", "911")
            await dial(pbx, tmp_path, "sam-exam", "+17205550141")  # not an emergency
            first, second, plain = await asyncio.to_thread(far.wait_for_invites, 3, 30)
            assert civic_address(first) == {
                "country": "US", "A1": "IL", "A3": "Evanston", "HNO": "45", "RD": "Oak Ave",
                "PC": "60201", "LOC": "Suite 300"}
            assert civic_address(second)["LOC"] == "Floor 2, Exam room 2"
            assert civic_address(second)["A3"] == "Chicago"
            assert_presents(first, SCHED)
            assert plain.header("Geolocation") is None
            assert "pidf" not in (plain.header("Content-Type") or "")
        finally:
            far.kill()


def civic_address(invite: SipMessage) -> dict[str, str]:
    """The civicAddress fields of the PIDF-LO part the Geolocation header points to."""
    pointer = invite.header("Geolocation") or ""
    assert pointer.startswith("<cid:"), invite.headers
    content_id = pointer[len("<cid:"):].split(">", 1)[0]
    content_type = invite.header("Content-Type") or ""
    assert content_type.startswith("multipart/mixed"), content_type
    boundary = content_type.split("boundary=", 1)[1].strip('"')
    for part in invite.body.split(f"--{boundary}"):
        head, _, body = part.strip("\n").partition("\n\n")
        if f"Content-ID: <{content_id}>" in head and "application/pidf+xml" in head:
            root = ET.fromstring(body.strip())
            ns = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
            found = root.find(f".//{{{ns}}}civicAddress")
            assert found is not None, body
            return {child.tag.split("}")[1]: (child.text or "") for child in found}
    raise AssertionError(f"no PIDF-LO part {content_id} in:\n{invite.body}")


# -- the config and the core ------------------------------------------------------------------


def test_check_refuses_a_desk_phone_without_callback_number_or_location(
        tmp_path: Path) -> None:
    path = tmp_path / "practice.yaml"
    path.write_text("""\
practice: {name: Oak Clinic, timezone: America/Chicago}
users:
  - {id: ana, name: Ana, email: ana@x.example, desk_phones: [ana-desk]}
  - id: bo
    name: Bo
    email: bo@x.example
    location: nowhere
    desk_phones:
      - bo-desk
      - {name: bo-exam, emergency_callback: "+13125550100", location: back}
numbers:
  - {number: "+13125550100", carries: [voice]}
  - {number: "+13125550109", carries: [fax]}
locations:
  - {id: front, address: 1 Oak St, city: Chicago, state: IL, zip: "60601"}
emergency: {callback: "+13125550109"}
connections:
  storage: {url: "sqlite:///tmp/never.db"}
""")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    got = {(p.line, p.field, p.expected.split(":")[0]) for p in caught.value.problems}
    assert (3, "users[0].desk_phones[0]", "ana-desk") in got  # no location
    assert (7, "users[1].location", "a known location") in got
    assert (10, "users[1].desk_phones[1].location", "a known location") in got
    assert (16, "emergency.callback", "a number that rings back into the practice") in got
    texts = " ".join(p.expected for p in caught.value.problems)
    assert "a location (RAY BAUM" in texts and "carries no voice" in texts
    # Without an emergency section a location is not required, a callback number is.
    path.write_text(path.read_text().replace('emergency: {callback: "+13125550109"}\n', ""))
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    missing = [p for p in caught.value.problems if "callback number" in p.expected]
    assert [(p.line, p.field) for p in missing] == [(3, "users[0].desk_phones[0]"),
                                                    (9, "users[1].desk_phones[0]")]


def test_callback_number_location_and_name_resolve_phone_then_user_then_practice() -> None:
    d = config.load(Path(__file__).parent.parent / "config" / "example.yaml").directory
    ana, raj_exam, jo = (emergency_caller(d, p) for p in ("ana-desk", "raj-exam2", "jo-desk"))
    assert ana is not None and raj_exam is not None and jo is not None
    assert (ana.callback, ana.location and ana.location.id) == ("+13125550101", "exam-rooms")
    assert (raj_exam.callback, raj_exam.location and raj_exam.location.id) == (
        "+13125550100", "exam-rooms")
    assert (jo.callback, jo.location and jo.location.id) == ("+13125550100", "front")
    assert emergency_caller(d, "pat-desk") is None  # deactivated: not provisioned at all
    # Never a person's name: not even the caller-ID name of Dr. Lee's own line.
    assert caller_id_name(d) == "Maple Street" and ana.caller_id_name == "Maple Street"


def test_the_notice_says_who_where_and_when_in_the_practices_time() -> None:
    at = datetime(2026, 3, 2, 16, 42, tzinfo=UTC)
    call = EmergencyCall("emergency:1", at, "ana-desk", "911")
    told = notice("Oak Clinic", "America/Chicago", call.dialled, "Ana's desk phone (ana-desk)",
                  "Floor 2, 1 Oak St, Chicago, IL 60601", call.at)
    assert told.text == ("Oak Clinic: a 911 call was placed from Ana's desk phone (ana-desk), "
                         "Floor 2, 1 Oak St, Chicago, IL 60601, at 10:42 AM on Mon Mar 2. "
                         "Help may be on the way: meet the responders.")
    assert told.subject == "Oak Clinic: 911 call from Ana's desk phone (ana-desk)"


def test_a_911_that_reaches_the_controller_gets_the_same_callback_number() -> None:
    """The PBX sends 911 out before asking the controller; should a desk phone's dial plan
    bring it there anyway, the decision presents the same callback number and name."""
    d = config.load(Path(__file__).parent.parent / "config" / "example.yaml").directory
    book = OwnershipBook(d)
    for mode in Mode:
        decision = decide_outbound(book, ConversationBook(), dialled("ana-desk", "911"), mode,
                                   d.emergency_numbers)
        assert decision == PlaceEmergencyCall("911", "+13125550101", "Maple Street")
