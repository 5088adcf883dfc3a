"""Call parking on the real Asterisk: an outside call answered on one desk phone, parked with
the phone's park key (a blind transfer to the park extension), shown on another phone's BLF
key, and picked up there; or, left parked, rung back to the phone that parked it.  SIPp desk
phones and carrier; the audio each leg carried is counted by Asterisk itself (its RTP
statistics on each channel); the call's journal record says it was parked and by whom it
was picked up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backline.core.park import ParkEvent, ParkStep
from tests.harness.park_phone import blf_key, dialog_states, talking_desk_caller
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, SippProcess, desk_phone
from tests.harness.transfer_phone import talking_caller, tone_file, transferring_phone
from tests.test_asterisk_calls import sip

pytestmark = pytest.mark.asterisk

MAIN = "+13125550100"  # owned by the practice: every active user's desk phones ring
PATIENT = "+17205550141"
# Packets of 20 ms: half a second of audio, well past any stray packet.
HEARD = 25


def park_section(timeout: int) -> str:
    return f'park: {{extension: "700", slots: "701-703", timeout: {timeout}}}\n'


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    # The ring-back test parks for a second; the pick-up test long enough never to time out.
    timeout = 1 if "rings_back" in request.node.name else 600
    name = "p-" + request.node.name[5:30]
    async with practice_pbx(tmp_path, name, ring_seconds=5, carrier_from_user=False,
                            park=park_section(timeout)) as p:
        yield p


async def rtp(p: PracticePbx, channel: str, counter: str) -> int:
    """Asterisk's count of RTP packets sent (``txcount``) on ``channel``."""
    answer: Any = await p.driver.ami.action({"Action": "Getvar", "Channel": channel,
                                             "Variable": f"CHANNEL(rtcp,{counter})"},
                                            within=30)
    return int(answer.get("Value") or 0)


async def until_sent(p: PracticePbx, channel: str, at_least: int, within: float = 30) -> int:
    """Until Asterisk has sent ``at_least`` RTP packets to ``channel`` (AssertionError
    after ``within`` s); the count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        sent = await rtp(p, channel, "txcount")
        if sent >= at_least:
            return sent
        if loop.time() > deadline:
            raise AssertionError(f"only {sent} RTP packets went to {channel}")
        await asyncio.sleep(0.1)  # a poll of Asterisk's counters, not a wait for time


def journaled_steps(p: PracticePbx) -> asyncio.Queue[ParkStep]:
    """Each park step once the controller has written it to the journal, in order."""
    written: asyncio.Queue[ParkStep] = asyncio.Queue()
    record = p.driver.on_park
    assert record is not None

    async def then_tell(event: ParkEvent) -> None:
        await record(event)
        written.put_nowait(event.step)

    p.driver.on_park = then_tell
    return written


async def steps_written(written: asyncio.Queue[ParkStep], count: int) -> list[ParkStep]:
    async with asyncio.timeout(30):
        return [await written.get() for _ in range(count)]


def kill(*procs: SippProcess) -> None:
    for proc in procs:
        proc.kill()


async def park_a_call(pbx: PracticePbx, tmp_path: Path, tone: Path,
                      extra: dict[str, DeskPhoneMode] | None = None
                      ) -> tuple[SippProcess, SippProcess, dict[str, str]]:
    """Ana answers an outside call on the main line and presses her park key; the parked
    call's AMI DialEnd (its ``Channel`` and ``Uniqueid`` are the caller's)."""
    ana = await asyncio.to_thread(transferring_phone, sip(pbx), tmp_path, "ana-desk",
                                  pbx.secret("ana-desk"), "700", aor="ana", talk_ms=3000)
    await pbx.driver.wait_registered({"ana"}, within=30)
    caller = talking_caller(sip(pbx), tmp_path, MAIN, from_user=PATIENT, audio=tone)
    answered = await pbx.events.wait_for(
        lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
        and e.get("DestChannel", "").startswith("PJSIP/ana-desk-"))
    return ana, caller, answered


async def test_a_parked_call_shows_on_a_blf_key_and_is_picked_up_from_another_phone(
        pbx: PracticePbx, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.ulaw")
    written = journaled_steps(pbx)
    blf = await asyncio.to_thread(blf_key, sip(pbx), tmp_path, "jo-desk",
                                  pbx.secret("jo-desk"), "701")
    procs = [blf]
    try:
        # Jo's BLF key on slot 701: idle at first.
        await asyncio.to_thread(blf.wait_for_messages, lambda m: dialog_states(m) != [], 30)
        assert dialog_states(blf.messages()) == ["terminated"]
        ana, caller, answered = await park_a_call(pbx, tmp_path, tone)
        procs += [ana, caller]
        parkee = answered["Channel"]  # the outside caller's channel, now in slot 701
        assert (await asyncio.to_thread(ana.wait, 30)).ok, ana.describe()  # REFER, BYE
        # The key lights: a NOTIFY says slot 701 is in use.
        await asyncio.to_thread(blf.wait_for_messages,
                                lambda m: "confirmed" in dialog_states(m), 15)
        # The caller waits with music: Asterisk sends them audio while nobody is on the line.
        held = await until_sent(pbx, parkee, await rtp(pbx, parkee, "txcount") + HEARD)
        # Jo dials the slot and talks with the caller, audio both ways.
        jo = await asyncio.to_thread(talking_desk_caller, sip(pbx), tmp_path, "jo-desk",
                                     pbx.secret("jo-desk"), "701", tone)
        procs.append(jo)
        picked = await pbx.events.wait_for(
            lambda e: e.get("Event") == "Newexten" and e.get("Application") == "ParkedCall")
        assert picked["Channel"].startswith("PJSIP/jo-desk-")
        await until_sent(pbx, picked["Channel"], HEARD)  # the caller's voice reached Jo
        await until_sent(pbx, parkee, held + HEARD)  # and Jo's reached the caller
        # The key goes dark again once the slot is empty.
        await asyncio.to_thread(blf.wait_for_messages,
                                lambda m: dialog_states(m)[-1] == "terminated", 15)
        # Jo hangs up; the caller's call ends with it.
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": picked["Channel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()

        # The call's journal record: parked by Ana in 701, picked up by Jo.
        journal = pbx.controller.journal
        key = f"call:{answered['Uniqueid']}"
        assert journal.attempt(key) is not None
        assert await steps_written(written, 2) == [ParkStep.PARKED, ParkStep.PICKED_UP]
        steps = [(h.by, h.action, h.note) for h in journal.call_handling(key)]
        assert steps == [("ana", "park.parked", "parked in slot 701 by ana"),
                         ("jo", "park.picked_up", "picked up from slot 701 by jo")]
    finally:
        kill(*procs)


async def test_a_parked_call_nobody_picks_up_rings_back_the_parker(
        pbx: PracticePbx, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.ulaw")
    # Ana's second desk phone on her login rings and never answers: the ring-back reaches it
    # (the phone that parked has hung up after its transfer, as phones do).
    written = journaled_steps(pbx)
    ringing = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "ana-desk",
                                      pbx.secret("ana-desk"), DeskPhoneMode.RING, aor="ana")
    procs = [ringing]
    try:
        ana, caller, answered = await park_a_call(pbx, tmp_path, tone)
        procs += [ana, caller]
        assert (await asyncio.to_thread(ana.wait, 30)).ok, ana.describe()
        # Parked for a second, then Ana's phones ring again with the caller.
        _, back = await asyncio.to_thread(ringing.wait_for_invites, 2, 30)
        assert PATIENT in (back.header("From") or "")
        rang = await pbx.events.wait_for(
            lambda e: e.get("Event") == "DialBegin" and e.get("Channel") == answered["Channel"]
            and e.get("Context") == "backline-park-timeout")
        assert rang["DestChannel"].startswith("PJSIP/ana-desk-")
        # Unanswered, the caller reaches the number's voicemail, never silence.
        await pbx.events.wait_for(
            lambda e: e.get("Event") == "Newexten" and e.get("Application") == "VoiceMail"
            and e.get("Channel") == answered["Channel"])
        await pbx.driver.ami.action({"Action": "Hangup", "Channel": answered["Channel"]},
                                    within=30)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        assert await steps_written(written, 2) == [ParkStep.PARKED, ParkStep.TIMED_OUT]
        key = f"call:{answered['Uniqueid']}"
        steps = [(h.by, h.action, h.note) for h in pbx.controller.journal.call_handling(key)]
        assert steps == [("ana", "park.parked", "parked in slot 701 by ana"),
                         ("ana", "park.timed_out",
                          "not picked up from slot 701 within 1 s; rang back ana")]
    finally:
        kill(*procs)
