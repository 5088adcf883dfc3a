"""Routing on the real Asterisk, with SIPp desk phones and a SIPp carrier.

Each test runs its own Asterisk instance (own ports) from the shared root and the controller
in the test's event loop; what rang is read from each SIPp desk phone's own message log and
from Asterisk's AMI events.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backline.core.e164 import outside
from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.core.records import Outcome
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import (
    DeskPhoneMode,
    SippError,
    SippProcess,
    answering_phone,
    desk_phone,
    place_calls,
    register,
)

pytestmark = pytest.mark.asterisk

SCHED, DIRECT, MAIN = "+13125550102", "+13125550101", "+13125550100"
PATIENT = "+17205550141"
PHONES = {"ana-desk": "ana", "raj-desk": "raj", "sam-desk": "sam", "jo-desk": "jo",
          "mia-desk": "mia"}


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    name = "t-" + request.node.name[5:35].replace("[", "-").replace("]", "")
    async with practice_pbx(tmp_path, name, ring_seconds=5) as p:
        yield p


def sip(p: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", p.ports.sip)


async def register_phones(p: PracticePbx, tmp: Path, mode: DeskPhoneMode,
                          phones: dict[str, str] = PHONES) -> dict[str, SippProcess]:
    out = {}
    for phone, user in phones.items():
        out[phone] = await asyncio.to_thread(desk_phone, sip(p), tmp, phone, p.secret(phone),
                                             mode, aor=user)
    await p.driver.wait_registered(set(phones.values()), within=30)
    return out


def kill_all(phones: dict[str, SippProcess]) -> None:
    for proc in phones.values():
        proc.kill()


def dialled_endpoints(p: PracticePbx) -> list[str]:
    """Desk-phone endpoints Asterisk dialled (``PJSIP/sam-desk-0000002a`` → ``sam-desk``)."""
    return [e["DestChannel"].removeprefix("PJSIP/").rsplit("-", 1)[0]
            for e in p.events.named("DialBegin")]


async def test_team_number_rings_exactly_the_team_and_extra_member_then_voicemail(
        pbx: PracticePbx, tmp_path: Path) -> None:
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING)
    try:
        caller = place_calls(sip(pbx), tmp_path, SCHED, from_user="carrier", timeout=40)
        expected = {"sam-desk", "jo-desk", "raj-desk"}  # team front-desk + extra user raj
        for phone in expected:
            await asyncio.to_thread(phones[phone].wait_for_invites, 1, 30)
        await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail")
        result = await asyncio.to_thread(caller.wait, 60)
        assert result.ok, caller.describe()
        for phone, proc in phones.items():
            assert len(proc.invites()) == (1 if phone in expected else 0), phone
        # At once: every leg began before any ended.
        legs = [e["Event"] for e in pbx.events.seen if e["Event"] in ("DialBegin", "DialEnd")]
        assert legs[:3] == ["DialBegin"] * 3 and "DialBegin" not in legs[3:]
        assert sorted(dialled_endpoints(pbx)) == sorted(expected)
    finally:
        kill_all(phones)


async def test_practice_number_rings_every_active_user_and_deactivated_phones_cannot_register(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # pat is deactivated: the phone is not provisioned at all.  Refused by the PBX (a 40x to
    # the REGISTER), not merely unanswered: 3 s used to end it on a loaded machine either way.
    with pytest.raises(SippError) as refused:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "pat-desk", "guess",
                                contact_port=5999, aor="pat", timeout=30)
    assert re.search(r"SIP/2\.0 40[134]", str(refused.value)), str(refused.value)
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING)
    try:
        caller = place_calls(sip(pbx), tmp_path, MAIN, from_user="carrier", timeout=40)
        for proc in phones.values():
            await asyncio.to_thread(proc.wait_for_invites, 1, 30)
        assert (await asyncio.to_thread(caller.wait, 60)).ok
        assert sorted(dialled_endpoints(pbx)) == sorted(PHONES)
    finally:
        kill_all(phones)


async def test_a_login_over_the_device_limit_drops_its_oldest_registration(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # devices.max_per_login is 2 in the test practice; sam has three desk phones.  Asterisk
    # drops the registration that expires soonest; the phones register within one second,
    # so each asks for a longer expiry than the last to make "oldest" unambiguous.
    phones = {}
    try:
        for phone, expires in (("sam-desk", 600), ("sam-exam", 1200), ("sam-lab", 1800)):
            phones[phone] = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, phone,
                                                    pbx.secret(phone), DeskPhoneMode.RING,
                                                    aor="sam", expires=expires)
        await pbx.events.wait_for(lambda e: e.get("Event") == "ContactStatus"
                                  and e.get("ContactStatus") == "Removed")
        contacts = pbx.instance.cli("pjsip show contacts")
        assert str(phones["sam-desk"].port) not in contacts
        assert str(phones["sam-lab"].port) in contacts
        caller = place_calls(sip(pbx), tmp_path, SCHED, from_user="carrier", timeout=40)
        await asyncio.to_thread(phones["sam-exam"].wait_for_invites, 1, 30)
        await asyncio.to_thread(phones["sam-lab"].wait_for_invites, 1, 30)
        assert (await asyncio.to_thread(caller.wait, 60)).ok
        assert phones["sam-desk"].invites() == []
    finally:
        kill_all(phones)


def outage(p: PracticePbx) -> None:
    change = ModeChange(Mode.OUTAGE, datetime.now(UTC), "test", Via.CLI, "drill")
    p.controller.state = ModeState(Mode.OUTAGE, change)


async def call_out(p: PracticePbx, tmp: Path, phone: str, digits: str) -> SippProcess:
    proc = place_calls(sip(p), tmp, digits, from_user=phone, password=p.secret(phone),
                       timeout=30)
    result = await asyncio.to_thread(proc.wait, 30)
    assert result.ok, proc.describe()  # connected, or answered with a refusal, then hung up
    return proc


async def test_calling_out_by_permission_with_the_numbers_caller_id(
        pbx: PracticePbx, tmp_path: Path) -> None:
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                              port=pbx.ports.trunk, talk_ms=200)
    try:
        # mia is a member of the main line (default) and, through the nurses, Dr. Lee's line.
        await call_out(pbx, tmp_path, "mia-desk", PATIENT)
        await call_out(pbx, tmp_path, "mia-desk", "*7" + DIRECT[2:] + PATIENT)
        first, second = await asyncio.to_thread(carrier.wait_for_invites, 2, 30)
        for invite, number, name in ((first, MAIN, "Test Main"), (second, DIRECT, "Dr Ana Lee")):
            pai = invite.header("P-Asserted-Identity") or ""
            assert number in pai and name in pai, pai
            assert number in (invite.header("From") or "")
            assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")
        # sam is not a member of Dr. Lee's line: refused, the carrier sees nothing.
        await call_out(pbx, tmp_path, "sam-desk", "*7" + DIRECT[2:] + PATIENT)
        assert len(carrier.invites()) == 2
        # Added to Dr. Lee's conversation with this patient: that party only.
        pbx.controller.conversations.add(DIRECT, PATIENT, "sam")
        await call_out(pbx, tmp_path, "sam-desk", "*7" + DIRECT[2:] + PATIENT)
        await asyncio.to_thread(carrier.wait_for_invites, 3, 30)
        await call_out(pbx, tmp_path, "sam-desk", "*7" + DIRECT[2:] + "+17205550199")
        assert len(carrier.invites()) == 3
        # Outage: refused, except 911, which always goes out.
        outage(pbx)
        await call_out(pbx, tmp_path, "mia-desk", PATIENT)
        assert len(carrier.invites()) == 3
        await call_out(pbx, tmp_path, "mia-desk", "911")
        invites = await asyncio.to_thread(carrier.wait_for_invites, 4, 30)
        assert invites[3].start_line.startswith("INVITE sip:911@")
    finally:
        carrier.kill()


async def test_unknown_number_hears_a_refusal_and_odd_caller_ids_are_data(
        pbx: PracticePbx, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # what `backline run` logs
    name = "Bob\\\\; Hangup() <123;x> $" "{SHELL(id)}"
    unknown = place_calls(sip(pbx), tmp_path, "+13125559999", from_user="carrier",
                          caller_name=name, timeout=30)
    assert (await asyncio.to_thread(unknown.wait, 30)).ok  # answered, refused, hung up
    played = await pbx.events.wait_for(lambda e: e.get("Application") == "Playback")
    assert played["AppData"] == "ss-noservice"
    assert pbx.instance.running
    # The name reached Asterisk, and stayed text: ``${SHELL(id)}`` was not run.
    caller_name = played["CallerIDName"]
    assert caller_name.startswith("Bob\\") and caller_name.endswith(name.split(";", 1)[1])
    # The attempt is journaled once, with the caller as the journal files it (the filtered
    # number, E.164 where it can be) and nothing of the name anywhere in the row.
    journal = pbx.controller.journal
    await pbx.controller.wait_rounds(lambda: len(journal.attempts(limit=10)) >= 1, within=30)
    (attempt,) = journal.attempts(limit=10)
    assert attempt.key == f"call:{played['Uniqueid']}"
    assert (attempt.recipient, attempt.outcome) == ("+13125559999", Outcome.REFUSED)
    assert attempt.sender == outside("carrier").number and attempt.sender_raw == "carrier"
    row = repr(attempt)
    assert not any(part in row for part in ("Bob", "Hangup()", "SHELL", "<123;x>"))
    # The log says a call was refused without the caller: no part of the name, and the
    # caller's number only redacted.
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("backline")]
    assert any("to an unknown number" in line and "from …" in line for line in lines), lines
    assert not [line for line in lines
                if any(part in line for part in ("Bob", "Hangup()", "SHELL", "<123;x>"))]


async def test_a_caller_id_cannot_rewrite_the_request_and_a_5000_character_one_is_decided(
        tmp_path: Path) -> None:
    # The carrier recognised by its address, so the From user is the caller's number.  A
    # %0A in it reaches Asterisk's caller ID as a line break, which Asterisk would write into
    # the AGI header block unescaped: here it tries to make a call to an unknown number
    # look like a call to Dr. Lee's line, dialled number and argument both.
    unknown = "+13125559999"
    injected = ("7205550141%0Aagi_extension%3A%20%2B13125550101"
                "%0Aagi_arg_1%3A%20%2B13125550101%0Aagi_arg_2%3A%207205550141")
    async with practice_pbx(tmp_path, "t-hostile-caller-id", ring_seconds=5,
                            carrier_from_user=False) as pbx:
        journal = pbx.controller.journal

        def journaled(n: int) -> bool:
            return len(journal.attempts(limit=10)) >= n

        caller = place_calls(sip(pbx), tmp_path, unknown, from_user=injected,
                             caller_name="Bob\\; Hangup() <123;x>", timeout=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        played = await pbx.events.wait_for(lambda e: e.get("Application") == "Playback")
        assert played["AppData"] == "ss-noservice"  # refused: not rung, not voicemail
        assert dialled_endpoints(pbx) == []
        await pbx.controller.wait_rounds(lambda: journaled(1), within=30)
        (first,) = journal.attempts(limit=10)
        assert first.recipient == unknown
        raw = first.sender_raw or first.sender
        assert raw.startswith("7205550141") and "\n" not in raw
        # A caller ID of 5,000 characters (the request's header line too): decided, refused
        # as an unknown number, and journaled with the caller ID cut.
        long_caller = place_calls(sip(pbx), tmp_path, unknown, from_user="7" * 5000,
                                  timeout=30)
        assert (await asyncio.to_thread(long_caller.wait, 30)).ok, long_caller.describe()
        await pbx.controller.wait_rounds(lambda: journaled(2), within=30)
        second = journal.attempts(limit=10)[-1]
        assert second.recipient == unknown and (second.sender_raw or second.sender) == "7" * 64
        plays = [e["AppData"] for e in pbx.events.seen if e.get("Application") == "Playback"]
        assert plays == ["ss-noservice", "ss-noservice"]  # never the outage announcement
        # The same through the number a call was diverted from (agi_rdnis, also written
        # before agi_extension and the arguments).
        diverted = place_calls(sip(pbx), tmp_path, unknown, from_user="7205550141",
                               extra_headers=[f"Diversion: <sip:{injected}@127.0.0.1>"
                                              ";reason=unconditional"], timeout=30)
        assert (await asyncio.to_thread(diverted.wait, 30)).ok, diverted.describe()
        await pbx.controller.wait_rounds(lambda: journaled(3), within=30)
        assert journal.attempts(limit=10)[-1].recipient == unknown
        plays = [e["AppData"] for e in pbx.events.seen if e.get("Application") == "Playback"]
        assert plays == ["ss-noservice"] * 3
        assert dialled_endpoints(pbx) == []
        assert pbx.driver.agi.failures == 0
        # Asterisk's own log holds no caller's number: it is not told each dialplan step.
        log = (await asyncio.to_thread(pbx.instance.log_path.read_text, errors="replace"))
        assert "Asterisk Ready." in log and "7205550141" not in log


async def test_controller_reconnects_after_asterisk_is_killed(
        pbx: PracticePbx, tmp_path: Path) -> None:
    assert pbx.driver.ami.up
    logins = pbx.driver.ami.logins
    await asyncio.to_thread(pbx.instance.kill)
    await asyncio.to_thread(pbx.instance.start)
    assert await pbx.driver.ami.wait_up(30)
    assert pbx.driver.ami.logins == logins + 1
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING, {"ana-desk": "ana"})
    try:
        caller = place_calls(sip(pbx), tmp_path, DIRECT, from_user="carrier", timeout=40)
        await asyncio.to_thread(phones["ana-desk"].wait_for_invites, 1, 30)
        assert (await asyncio.to_thread(caller.wait, 60)).ok
    finally:
        kill_all(phones)


async def test_desk_phones_beside_a_carrier_recognised_by_its_address(tmp_path: Path) -> None:
    # config/example.yaml's trunk has no from_user: Asterisk recognises the carrier by its
    # address, and on one host (loopback) that is every desk phone's address too.  Desk
    # phones register to their login (From = user id, digest user = desk phone), so the From
    # names no endpoint: they must still be told apart from the carrier by their credentials.
    async with practice_pbx(tmp_path, "t-beside-carrier", ring_seconds=5,
                            carrier_from_user=False) as pbx:
        assert "from_user" not in pbx.config_path.read_text()
        carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                                  port=pbx.ports.trunk, talk_ms=200)
        phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING,
                                       {"ana-desk": "ana", "mia-desk": "mia", "sam-desk": "sam"})
        try:
            # The carrier's call, from the phones' address, with a patient's number in From:
            # Dr. Lee's line rings Dr. Lee and the nurses (mia), not sam, then voicemail.
            caller = place_calls(sip(pbx), tmp_path, DIRECT, from_user=PATIENT, timeout=40)
            for phone in ("ana-desk", "mia-desk"):
                await asyncio.to_thread(phones[phone].wait_for_invites, 1, 30)
            await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail")
            assert (await asyncio.to_thread(caller.wait, 60)).ok, caller.describe()
            assert phones["sam-desk"].invites() == []
            assert sorted(dialled_endpoints(pbx)) == ["ana-desk", "mia-desk"]
            # A desk phone calling out as its login goes out through the carrier with the
            # main line's caller ID (not taken for a carrier call to an unknown number).
            out = place_calls(sip(pbx), tmp_path, PATIENT, from_user="mia",
                              auth_user="mia-desk", password=pbx.secret("mia-desk"), timeout=30)
            assert (await asyncio.to_thread(out.wait, 30)).ok, out.describe()
            (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
            pai = invite.header("P-Asserted-Identity") or ""
            assert MAIN in pai and "Test Main" in pai, pai
            assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")
            # And 911, which never waits on the controller, from the same phone.
            out = place_calls(sip(pbx), tmp_path, "911", from_user="mia",
                              auth_user="mia-desk", password=pbx.secret("mia-desk"), timeout=30)
            assert (await asyncio.to_thread(out.wait, 30)).ok, out.describe()
            invites = await asyncio.to_thread(carrier.wait_for_invites, 2, 30)
            assert invites[1].start_line.startswith("INVITE sip:911@")
        finally:
            kill_all(phones)
            carrier.kill()


async def test_at_debug_level_no_log_line_holds_the_callers_name(
        pbx: PracticePbx, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Ops turn on DEBUG to chase a fault; the AMI library would then dump whole AMI messages
    # (CallerIDName, CallerIDNum) into the log. Nothing of the caller may appear.
    caplog.set_level(logging.DEBUG)
    name = "Zedediah Quillfeather"
    caller = place_calls(sip(pbx), tmp_path, "+13125559999", from_user="carrier",
                         caller_name=name, timeout=30)
    assert (await asyncio.to_thread(caller.wait, 30)).ok
    played = await pbx.events.wait_for(lambda e: e.get("Application") == "Playback")
    assert played["CallerIDName"] == name  # the name did reach Asterisk and its AMI
    await pbx.controller.wait_rounds(
        lambda: len(pbx.controller.journal.attempts(limit=10)) >= 1, within=30)
    assert logging.getLogger("backline").getEffectiveLevel() == logging.DEBUG
    leaked = [f"{r.name}: {r.getMessage()}" for r in caplog.records
              if "Quillfeather" in r.getMessage() or "Zedediah" in r.getMessage()]
    assert leaked == []
