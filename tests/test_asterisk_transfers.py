"""Transfers by the desk phone's own buttons on the real Asterisk: SIPp desk phones that
answer an outside call and press transfer (a blind transfer: SIP REFER), a SIPp carrier, and
the controller deciding in this event loop.  What rang is read from each phone's message log
and Asterisk's AMI events; the audio each leg carried is counted by Asterisk itself (its
RTP statistics on each channel)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sip_phone import AttendedPhone
from tests.harness.sipp import DeskPhoneMode, SippProcess, answering_phone, register
from tests.harness.transfer_phone import (
    talking_caller,
    talking_phone,
    tone_file,
    transferring_phone,
)
from tests.test_asterisk_calls import call_out, sip

pytestmark = pytest.mark.asterisk

SCHED = "+13125550102"  # Front Desk (sam, jo) and raj; mia and ana are not members
PATIENT, OTHER = "+17205550141", "+17205550199"
# Packets of 20 ms: half a second of audio, well past any stray packet.
HEARD = 25


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    name = "x-" + request.node.name[5:30]
    # The carrier by its address: the caller's own number is the From user.
    async with practice_pbx(tmp_path, name, ring_seconds=5, carrier_from_user=False) as p:
        yield p


async def rtp(p: PracticePbx, channel: str, counter: str) -> int:
    """Asterisk's count of RTP packets received (``rxcount``) or sent (``txcount``) on
    ``channel``."""
    answer: Any = await p.driver.ami.action({"Action": "Getvar", "Channel": channel,
                                             "Variable": f"CHANNEL(rtcp,{counter})"},
                                            within=30)
    return int(answer.get("Value") or 0)


async def until_heard(p: PracticePbx, caller: str, callee: str, within: float = 30) -> None:
    """Until audio went both ways between the two channels: Asterisk sent the callee what
    the caller said and the caller what the callee said (each checked again as packets
    arrive; AssertionError after ``within`` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        to_callee, to_caller = await rtp(p, callee, "txcount"), await rtp(p, caller, "txcount")
        if to_callee >= HEARD and to_caller >= HEARD:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"audio did not go both ways: {to_callee} packets to {callee}, {to_caller} "
                f"to {caller}; received {await rtp(p, callee, 'rxcount')} from {callee}, "
                f"{await rtp(p, caller, 'rxcount')} from {caller}")
        await asyncio.sleep(0.1)  # a poll of Asterisk's counters, not a wait for time


async def until_bridged(p: PracticePbx, one: str, other: str, within: float = 30) -> None:
    """Until Asterisk has ``one`` bridged to ``other`` (``BRIDGEPEER``), asked again until
    ``within`` s pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        answer: Any = await p.driver.ami.action({"Action": "Getvar", "Channel": one,
                                                 "Variable": "BRIDGEPEER"}, within=30)
        if answer.get("Value") == other:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{one} is bridged to {answer.get('Value')!r}, not {other}")
        await asyncio.sleep(0.1)  # a poll of Asterisk's state, not a wait for time


async def until_answered_and_bridged(p: PracticePbx, phone: str, nth: int) -> None:
    """Until the ``nth`` call answered on ``phone`` is bridged to its caller: a phone that
    presses transfer before that gets a failed transfer (400 in the NOTIFY)."""
    def answered() -> list[dict[str, str]]:
        return [e for e in p.events.named("DialEnd") if e.get("DialStatus") == "ANSWER"
                and e.get("DestChannel", "").startswith(f"PJSIP/{phone}-")]

    await p.events.wait_for(lambda _: len(answered()) >= nth)
    call = answered()[nth - 1]
    await until_bridged(p, call["DestChannel"], call["Channel"])


def kill(*procs: SippProcess) -> None:
    for proc in procs:
        proc.kill()


async def test_blind_transfer_to_a_non_member_connects_both_ways_and_adds_them(
        pbx: PracticePbx, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.ulaw")
    # Sam (front desk, a member of the scheduling line) answers and transfers to Mia's
    # extension; Mia (a nurse) is not a member of that line.  Sam sends no audio: what the
    # caller hears after the transfer can only be Mia.
    sam = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "sam-desk",
                                  pbx.secret("sam-desk"), "121", aor="sam")
    mia = await asyncio.to_thread(talking_phone, sip(pbx), tmp_path, "mia-desk",
                                  pbx.secret("mia-desk"), aor="mia", audio=tone)
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                              port=pbx.ports.trunk, talk_ms=200)
    await pbx.driver.wait_registered({"sam", "mia"}, within=30)
    caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=tone)
    try:
        (invite,) = await asyncio.to_thread(mia.wait_for_invites, 1, 30)
        assert PATIENT in (invite.header("From") or "")  # Mia sees who is calling
        answered = await pbx.events.wait_for(
            lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
            and e.get("DestChannel", "").startswith("PJSIP/mia-desk-"))
        assert answered["Context"] == "backline-transfer-ring"
        await until_heard(pbx, answered["Channel"], answered["DestChannel"])
        # Mia hangs up; the caller's call ends with it (the PBX's BYE), never in silence.
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": answered["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        assert (await asyncio.to_thread(sam.wait, 30)).ok, sam.describe()
        # (once each: a request SIPp resent while Asterisk was slow to answer counts once)
        assert list(dict.fromkeys(m.start_line.split()[0] for m in sam.messages()
                                  if m.direction == "sent" and m.method)) == ["REFER", "BYE"]

        # Mia was added to that one conversation: she may call the caller back from the
        # scheduling line, with its caller ID, and nobody else from it.
        conversations = pbx.controller.conversations
        await pbx.controller.wait_rounds(  # added by a task of its own after the transfer
            lambda: conversations.is_added(pbx.controller.book, SCHED, PATIENT, "mia"),
            within=30)
        await call_out(pbx, tmp_path, "mia-desk", "*7" + SCHED[2:] + PATIENT)
        (out,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
        assert out.start_line.startswith(f"INVITE sip:{PATIENT}@")
        assert SCHED in (out.header("P-Asserted-Identity") or "")
        await call_out(pbx, tmp_path, "mia-desk", "*7" + SCHED[2:] + OTHER)
        assert len(carrier.invites()) == 1

        # The call's journal record: who handled it, where it went; the addition audited.
        journal = pbx.controller.journal
        key = f"call:{answered['Uniqueid']}"
        assert journal.attempt(key) is not None
        await pbx.controller.wait_rounds(lambda: len(journal.call_handling(key)) == 1,
                                         within=30)
        (handled,) = journal.call_handling(key)
        assert (handled.by, handled.action) == ("sam", "transfer.blind")
        assert handled.note == ("handled by sam; blind transfer to extension 121 (mia); added "
                                "mia to the conversation")
        (change,) = journal.conversation_changes()
        assert (change.by, change.via, change.detail) == ("sam", "transfer",
                                                          f"blind transfer of {key}")
        assert [(e.actor, e.action) for e in journal.audit_log()] == \
            [("sam", "conversation.add")]
    finally:
        kill(sam, mia, caller, carrier)


async def test_blind_transfer_out_follows_the_outbound_rules(
        pbx: PracticePbx, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.ulaw")
    # Sam, a member of the scheduling line, sends the caller out to another number: an
    # outbound call from that line with its caller ID.
    sam = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "sam-desk",
                                  pbx.secret("sam-desk"), OTHER, aor="sam")
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                              port=pbx.ports.trunk)
    await pbx.driver.wait_registered({"sam"}, within=30)
    caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=tone)
    try:
        (out,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
        assert out.start_line.startswith(f"INVITE sip:{OTHER}@")
        pai = out.header("P-Asserted-Identity") or ""
        assert SCHED in pai and "Test Sched" in pai, pai
        answered = await pbx.events.wait_for(
            lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
            and e.get("Context") == "backline-transfer-out")
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": answered["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        key = f"call:{answered['Uniqueid']}"
        await pbx.controller.wait_rounds(  # written by a task of its own after the transfer
            lambda: len(pbx.controller.journal.call_handling(key)) == 1, within=30)
        (handled,) = pbx.controller.journal.call_handling(key)
        assert handled.note == f"handled by sam; blind transfer out to …99 from {SCHED}"
    finally:
        kill(sam, carrier, caller)

    # Mia, given the call by Sam (she is not a member of the line), may not send the caller
    # out from it: refused; the caller goes back to her desk phone, and with her phone gone,
    # to the line's voicemail.  The carrier sees nothing.
    sam = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "sam-desk",
                                  pbx.secret("sam-desk"), "121", aor="sam")
    mia = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "mia-desk",
                                  pbx.secret("mia-desk"), OTHER, aor="mia")
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier2",
                              port=pbx.ports.trunk)
    await pbx.driver.wait_registered({"sam", "mia"}, within=30)
    caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=tone)
    try:
        assert (await asyncio.to_thread(mia.wait, 30)).ok, mia.describe()
        voicemail = await pbx.events.wait_for(
            lambda e: e.get("Event") == "Newexten" and e.get("Application") == "VoiceMail",
            within=30)
        assert voicemail["AppData"].startswith("3125550102@"), voicemail
        rings = [e for e in pbx.events.named("DialBegin")
                 if e.get("Uniqueid") == voicemail["Uniqueid"]]
        assert [e["DestChannel"].rsplit("-", 1)[0] for e in rings][-2:] == \
            ["PJSIP/mia-desk", "PJSIP/mia-desk"]  # Mia, then Mia again after the refusal
        assert carrier.invites() == []
        await pbx.controller.wait_rounds(lambda: len(pbx.controller.journal.call_handling(
            f"call:{voicemail['Uniqueid']}")) >= 1, within=30)
        notes = [h.note for h in
                 pbx.controller.journal.call_handling(f"call:{voicemail['Uniqueid']}")]
        assert notes[-1] == ("handled by mia; blind transfer refused (not-a-member): the "
                             "caller went back to mia")
    finally:
        kill(sam, mia, carrier, caller)


async def test_attended_transfer_to_a_non_member_connects_both_ways_and_adds_them(
        pbx: PracticePbx, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.ulaw")
    # Sam answers, calls Mia's extension himself (the consultation), then transfers.
    sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
    await sam.start()
    mia = await asyncio.to_thread(talking_phone, sip(pbx), tmp_path, "mia-desk",
                                  pbx.secret("mia-desk"), aor="mia", audio=tone)
    caller: SippProcess | None = None
    try:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "sam-desk",
                                pbx.secret("sam-desk"), contact_port=sam.port, aor="sam")
        await pbx.driver.wait_registered({"sam", "mia"}, within=30)
        caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=tone)
        await sam.answer_call()
        await sam.consult("121")
        await until_answered_and_bridged(pbx, "mia-desk", 1)  # as a person would wait
        assert (await sam.transfer("121")).status == 202
        await sam.hang_up_after_transfer()
        rang = await pbx.events.wait_for(
            lambda e: e.get("Event") == "DialBegin"
            and e.get("DestChannel", "").startswith("PJSIP/sam-desk-"))
        consulted = await pbx.events.wait_for(
            lambda e: e.get("Event") == "DialBegin"
            and e.get("DestChannel", "").startswith("PJSIP/mia-desk-"))
        # The caller and Mia are bridged together (Sam's two legs are gone) and talk: Sam's
        # phone sends no audio, so what each hears is the other.
        await until_bridged(pbx, rang["Channel"], consulted["DestChannel"])
        await until_heard(pbx, rang["Channel"], consulted["DestChannel"])

        book, conversations = pbx.controller.book, pbx.controller.conversations
        await pbx.controller.wait_rounds(
            lambda: conversations.is_added(book, SCHED, PATIENT, "mia"), within=30)
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": consulted["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        key = f"call:{rang['Uniqueid']}"
        (handled,) = pbx.controller.journal.call_handling(key)
        assert (handled.by, handled.action, handled.note) == (
            "sam", "transfer.attended",
            "handled by sam; attended transfer to mia; added mia to the conversation")
        (change,) = pbx.controller.journal.conversation_changes()
        assert (change.by, change.via, change.key.user_id) == ("sam", "transfer", "mia")
    finally:
        sam.close()
        kill(mia, *([caller] if caller else []))


async def test_a_refused_blind_transfer_sends_the_caller_back_to_the_transferring_user(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # Sam puts the caller through to Mia (not a member of the line); Mia tries to send the
    # caller out to another number, which she may not do from this line: refused, and her
    # own desk phone rings again with the caller, who is never left in silence.
    mia = AttendedPhone(sip(pbx), "mia-desk", pbx.secret("mia-desk"))
    await mia.start()
    sam = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "sam-desk",
                                  pbx.secret("sam-desk"), "121", aor="sam")
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                              port=pbx.ports.trunk)
    caller: SippProcess | None = None
    try:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "mia-desk",
                                pbx.secret("mia-desk"), contact_port=mia.port, aor="mia")
        await pbx.driver.wait_registered({"sam", "mia"}, within=30)
        caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT,
                                audio=tone_file(tmp_path / "tone.ulaw"))
        await mia.answer_call()
        await until_answered_and_bridged(pbx, "mia-desk", 1)  # as a person would wait
        back = await mia.blind_transfer_taken_back(OTHER)
        assert PATIENT in back.get("From")  # the caller, back on Mia's phone
        def mia_answered() -> list[dict[str, str]]:
            return [e for e in pbx.events.named("DialEnd") if e.get("DialStatus") == "ANSWER"
                    and e.get("Context") == "backline-transfer-ring"
                    and e.get("DestChannel", "").startswith("PJSIP/mia-desk-")]

        # Answered twice in the caller's transferred call: Sam's transfer, then the way back.
        await pbx.events.wait_for(lambda _: len(mia_answered()) >= 2)
        first, answered = mia_answered()
        assert first["Uniqueid"] == answered["Uniqueid"]  # the same caller's channel
        assert carrier.invites() == []
        await pbx.controller.wait_rounds(lambda: len(pbx.controller.journal.call_handling(
            f"call:{answered['Uniqueid']}")) >= 2, within=30)
        (sam_put_through, refused) = pbx.controller.journal.call_handling(
            f"call:{answered['Uniqueid']}")
        assert sam_put_through.note.startswith("handled by sam; blind transfer to extension 121")
        assert refused.note == ("handled by mia; blind transfer refused (not-a-member): the "
                                "caller went back to mia")
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": answered["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
    finally:
        mia.close()
        kill(sam, carrier, *([caller] if caller else []))


NURSES = "+13125550101"  # Ana's line, with the nurses (mia, pat) as members


def answered_on(p: PracticePbx, phone: str, context: str) -> list[dict[str, str]]:
    """The calls ``phone`` answered that were dialled from ``context``, in order."""
    return [e for e in p.events.named("DialEnd") if e.get("DialStatus") == "ANSWER"
            and e.get("Context") == context
            and e.get("DestChannel", "").startswith(f"PJSIP/{phone}-")]


async def consulted_out(p: PracticePbx, phone: str) -> dict[str, str]:
    """The DialEnd of ``phone``'s consultation call answered by the carrier, once Asterisk
    has the two bridged (a transfer pressed before that fails)."""
    consulted = await p.events.wait_for(
        lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
        and e.get("Channel", "").startswith(f"PJSIP/{phone}-"))
    await until_bridged(p, consulted["DestChannel"], consulted["Channel"])
    return consulted


async def test_an_attended_transfer_out_by_a_member_joins_the_caller_to_the_party(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # Sam, a member of the scheduling line, calls another party from that line and joins
    # the caller to that call: he could have called the party from it, so it stands.
    sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
    await sam.start()
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                              port=pbx.ports.trunk)
    caller: SippProcess | None = None
    try:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "sam-desk",
                                pbx.secret("sam-desk"), contact_port=sam.port, aor="sam")
        await pbx.driver.wait_registered({"sam"}, within=30)
        caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT,
                                audio=tone_file(tmp_path / "tone.ulaw"))
        await sam.answer_call()
        await until_answered_and_bridged(pbx, "sam-desk", 1)
        await sam.consult("*7" + SCHED[2:] + OTHER)
        consulted = await consulted_out(pbx, "sam-desk")
        assert (await sam.transfer(OTHER)).status == 202
        await sam.hang_up_after_transfer()
        (rang,) = answered_on(pbx, "sam-desk", "backline-ring")
        await until_bridged(pbx, rang["Channel"], consulted["DestChannel"])
        key = f"call:{rang['Uniqueid']}"
        await pbx.controller.wait_rounds(
            lambda: len(pbx.controller.journal.call_handling(key)) == 1, within=30)
        (handled,) = pbx.controller.journal.call_handling(key)
        assert handled.note == "handled by sam; attended transfer to an outside call"
        assert carrier.invites()[0].start_line.startswith(f"INVITE sip:{OTHER}@")
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": consulted["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
    finally:
        sam.close()
        kill(carrier, *([caller] if caller else []))


async def test_an_attended_transfer_out_follows_the_outbound_rules(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # Sam puts the caller through to Mia, who is not a member of the scheduling line.  Mia
    # calls another party from her own line (the nurses', hers to use) and then joins the
    # caller to that call.  From the scheduling line she may call the caller and nobody
    # else, so the transfer is refused as a blind one would be: the party is hung up and the
    # caller rings Mia's desk phone again.
    mia = AttendedPhone(sip(pbx), "mia-desk", pbx.secret("mia-desk"))
    await mia.start()
    sam = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "sam-desk",
                                  pbx.secret("sam-desk"), "121", aor="sam")
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                              port=pbx.ports.trunk)
    caller: SippProcess | None = None
    try:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "mia-desk",
                                pbx.secret("mia-desk"), contact_port=mia.port, aor="mia")
        await pbx.driver.wait_registered({"sam", "mia"}, within=30)
        caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT,
                                audio=tone_file(tmp_path / "tone.ulaw"))
        await mia.answer_call()
        await until_answered_and_bridged(pbx, "mia-desk", 1)
        await mia.consult("*7" + NURSES[2:] + OTHER)
        (out,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
        assert out.start_line.startswith(f"INVITE sip:{OTHER}@")
        assert NURSES in (out.header("P-Asserted-Identity") or "")  # her call to make
        consulted = await consulted_out(pbx, "mia-desk")
        back = await mia.attended_transfer_taken_back(OTHER)
        assert PATIENT in back.get("From")  # the caller, back on Mia's phone
        await pbx.events.wait_for(lambda e: e.get("Event") == "Hangup"
                                  and e.get("Channel") == consulted["DestChannel"])
        # Answered twice in the caller's call: Sam's transfer, then the way back; and the
        # caller is bridged to Mia's phone, not to the party.
        await pbx.events.wait_for(
            lambda _: len(answered_on(pbx, "mia-desk", "backline-transfer-ring")) >= 2)
        first, answered = answered_on(pbx, "mia-desk", "backline-transfer-ring")
        assert first["Uniqueid"] == answered["Uniqueid"]
        await until_bridged(pbx, answered["Channel"], answered["DestChannel"])
        key = f"call:{answered['Uniqueid']}"
        await pbx.controller.wait_rounds(
            lambda: len(pbx.controller.journal.call_handling(key)) >= 2, within=30)
        (sam_put_through, refused) = pbx.controller.journal.call_handling(key)
        assert sam_put_through.note.startswith("handled by sam; blind transfer to extension 121")
        assert (refused.by, refused.action, refused.note) == (
            "mia", "transfer.attended", "handled by mia; attended transfer refused "
            "(not-a-member): the caller went back to mia")
        book, conversations = pbx.controller.book, pbx.controller.conversations
        assert not conversations.is_added(book, SCHED, OTHER, "mia")
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": answered["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
    finally:
        mia.close()
        kill(sam, carrier, *([caller] if caller else []))


async def test_an_attended_transfer_of_the_caller_to_911_stands(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # Sam, on the phone with a patient in distress, calls 911 and joins the patient to the
    # dispatcher.  The outbound rules are for calls the practice pays for, never for 911:
    # the dispatcher stays on the line with the patient, and nothing is undone.
    sam = AttendedPhone(sip(pbx), "sam-desk", pbx.secret("sam-desk"))
    await sam.start()
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER, name="carrier",
                              port=pbx.ports.trunk)
    caller: SippProcess | None = None
    try:
        await asyncio.to_thread(register, sip(pbx), tmp_path, "sam-desk",
                                pbx.secret("sam-desk"), contact_port=sam.port, aor="sam")
        await pbx.driver.wait_registered({"sam"}, within=30)
        caller = talking_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT,
                                audio=tone_file(tmp_path / "tone.ulaw"))
        await sam.answer_call()
        await until_answered_and_bridged(pbx, "sam-desk", 1)
        await sam.consult("911")
        dispatcher = await consulted_out(pbx, "sam-desk")
        assert carrier.invites()[0].start_line.startswith("INVITE sip:911@")
        assert (await sam.transfer("911")).status == 202
        await sam.hang_up_after_transfer()
        (rang,) = answered_on(pbx, "sam-desk", "backline-ring")
        await until_bridged(pbx, rang["Channel"], dispatcher["DestChannel"])
        key = f"call:{rang['Uniqueid']}"
        await pbx.controller.wait_rounds(
            lambda: len(pbx.controller.journal.call_handling(key)) == 1, within=30)
        (handled,) = pbx.controller.journal.call_handling(key)
        assert handled.note == "handled by sam; attended transfer to an outside call"
        # Still joined once the controller has judged it: nothing hung the dispatcher up.
        await until_bridged(pbx, rang["Channel"], dispatcher["DestChannel"])
        assert not [e for e in pbx.events.named("Hangup")
                    if e.get("Channel") == dispatcher["DestChannel"]]
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": dispatcher["DestChannel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
    finally:
        sam.close()
        kill(carrier, *([caller] if caller else []))
