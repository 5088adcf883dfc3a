"""A desk phone's blind transfer of a caller to 911 on the real Asterisk: out at once through
the emergency path (the transferring phone's callback number and the practice's name in
From and P-Asserted-Identity, the on-site notice), decided in the dialplan, so it goes out
with the controller stopped too.  SipP carrier and caller, a scripted desk phone that
answers and transfers, aiosmtpd for the notice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backline.journal.emergency import EmergencyCallRecord
from tests.harness.practice_pbx import PracticePbx, emergency_with_notice, practice_pbx
from tests.harness.sip_phone import AttendedPhone
from tests.harness.sipp import DeskPhoneMode, SippProcess, answering_phone, register
from tests.harness.smtp_sink import SmtpSink
from tests.harness.transfer_phone import talking_caller, tone_file
from tests.test_asterisk_transfers import until_answered_and_bridged
from tests.test_emergency import MAIN, SCHED, assert_presents, civic_address, sip

pytestmark = pytest.mark.asterisk

PATIENT = "+17205550141"
NOTIFY_EMAIL = "ops@t.example"


async def _sam_has_the_caller(pbx: PracticePbx, tmp_path: Path, sam: AttendedPhone
                              ) -> SippProcess:
    """Sam's desk phone (callback number: the main line) answers a patient's call to the
    scheduling line; returns the patient's SIPp once they are bridged."""
    await sam.start()
    await asyncio.to_thread(register, sip(pbx), tmp_path, "sam-desk", pbx.secret("sam-desk"),
                            contact_port=sam.port, aor="sam")
    await pbx.driver.wait_registered({"sam"}, within=30)
    caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT,
                            audio=tone_file(tmp_path / "tone.ulaw"))
    await sam.answer_call()
    await until_answered_and_bridged(pbx, "sam-desk", 1)
    return caller


async def test_a_blind_transfer_to_911_goes_out_with_the_callback_number_and_the_notice(
        tmp_path: Path) -> None:
    # Sam, on the phone with a patient in distress, presses transfer and dials 911.  The
    # dispatcher gets the call with the practice's callback number, never the patient's
    # number, and the notify list hears of it at once, as for a 911 from Sam's phone.
    async with SmtpSink() as sink:
        extra = (f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
                 "from: backline@t.example}\n")
        async with practice_pbx(tmp_path, "et-notice", ring_seconds=5,
                                carrier_from_user=False, connections_extra=extra,
                                emergency=emergency_with_notice(
                                    f"{{emails: [{NOTIFY_EMAIL}]}}")) as pbx:
            pbx.controller.emergency.start()
            carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                                      port=pbx.ports.trunk)
            sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
            caller: SippProcess | None = None
            try:
                caller = await _sam_has_the_caller(pbx, tmp_path, sam)
                await sam.blind_transfer("911")
                (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
                assert_presents(invite, MAIN)
                assert not any(PATIENT in value for _, value in invite.headers)
                (email,) = await sink.wait_for(1, within=30)
                message = email.message()
                assert email.rcpt_tos == (NOTIFY_EMAIL,)
                assert "sam-desk" in message["Subject"]
                body = str(message.get_content()) if not message.is_multipart() else ""
                assert "(sam-desk)" in body and "911" in body, body
                assert PATIENT not in body and PATIENT[-4:] not in body
                (call,) = pbx.controller.journal.emergency_calls()
                assert (call.desk_phone, call.dialled, call.late) == ("sam-desk", "911", False)
            finally:
                sam.close()
                carrier.kill()
                if caller is not None:
                    caller.kill()
                await pbx.controller.emergency.close()


async def _imported(pbx: PracticePbx) -> list[EmergencyCallRecord]:
    """The 911 calls journaled once the PBX's record, imported again as Asterisk appends
    to it, has one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # bounds a hang: a loaded machine is slow to write it
    while loop.time() < deadline:
        await pbx.controller.import_pbx_record()
        calls = pbx.controller.journal.emergency_calls()
        if calls:
            return calls
        await asyncio.sleep(0.1)  # a poll of Asterisk's record, not a wait for time
    path = pbx.controller.cdr_path
    raise AssertionError(f"no 911 in the PBX's record: "
                         f"{path.read_text() if path and path.exists() else path}")


async def test_a_blind_transfer_to_911_goes_out_with_the_controller_stopped(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "et-stopped", ring_seconds=5,
                            carrier_from_user=False) as pbx:
        carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                                  port=pbx.ports.trunk, talk_ms=200)
        sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
        caller: SippProcess | None = None
        try:
            caller = await _sam_has_the_caller(pbx, tmp_path, sam)
            await pbx.driver.stop()  # FastAGI and AMI closed: nobody answers the PBX
            await sam.blind_transfer("911")
            (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
            assert_presents(invite, MAIN)
            assert pbx.controller.journal.emergency_calls() == []
            # The dispatcher hangs up; back, the controller finds the call in Asterisk's
            # record (written as the call ends) and journals it as Sam's 911, late.
            assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
            calls = await _imported(pbx)
            assert [(c.desk_phone, c.dialled, c.late) for c in calls] == [
                ("sam-desk", "911", True)]
        finally:
            sam.close()
            carrier.kill()
            if caller is not None:
                caller.kill()


async def test_with_geolocation_a_blind_transfer_to_911_carries_the_transferring_phones_address(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "et-geo", ring_seconds=5, carrier_from_user=False,
                            trunk_extra=", geolocation: true") as pbx:
        carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                                  port=pbx.ports.trunk)
        sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
        caller: SippProcess | None = None
        try:
            caller = await _sam_has_the_caller(pbx, tmp_path, sam)
            await sam.blind_transfer("911")
            (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
            assert_presents(invite, MAIN)
            assert civic_address(invite) == {  # sam-desk is at the front desk
                "country": "US", "A1": "IL", "A3": "Chicago", "HNO": "1200",
                "RD": "W Maple St", "PC": "60607", "LOC": "Floor 1, front desk"}
        finally:
            sam.close()
            carrier.kill()
            if caller is not None:
                caller.kill()
