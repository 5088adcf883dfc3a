"""The practice's hours on the real Asterisk, with SIPp desk phones and a SIPp carrier.

The controller's clock is set by the test (moved to a Monday morning or evening in Chicago),
never waited for: a call at a closed time gets the closed path (the closed announcement, then
the number's voicemail; or, for a number whose hours name an answering service, a forward
there with the number's caller ID, seen by the SIPp carrier), and the outage wins over both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backline.core.hours import HoursState
from backline.core.outage import Mode, Via
from backline.core.records import Attempt, Outcome
from tests.harness.practice_pbx import OUTAGE_PIN, PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, SippProcess, answering_phone, desk_phone, place_calls

pytestmark = pytest.mark.asterisk

DIRECT, MAIN = "+13125550101", "+13125550100"
ANSWERING_SERVICE = "+13125550199"
PATIENT = "+17205550141"

# Weekdays 08:00-17:00 in Chicago; Dr. Lee's direct line forwards to the answering service
# when closed, every other number plays the closed announcement and takes a message.
HOURS = """\
hours:
  open: {mon: ["08:00-17:00"], tue: ["08:00-17:00"], wed: ["08:00-17:00"],
         thu: ["08:00-17:00"], fri: ["08:00-17:00"]}
  holidays: ["2026-12-25"]
  closed:
    announcement: {text: "You have reached us after hours. Please leave a message."}
"""
DIRECT_HOURS = 'hours: {open: {mon: ["08:00-17:00"]}, closed: {forward_to: "(312) 555-0199"}}'

MONDAY_MORNING = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)  # 10:00 CST: open
MONDAY_EVENING = datetime(2026, 1, 6, 2, 0, tzinfo=UTC)   # Mon 20:00 CST: closed


class SetClock:
    """The controller's clock: real time moved by a fixed offset the test sets, so the
    controller's own rounds still see time pass."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def set(self, at: datetime) -> None:
        self._offset = at - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self._offset


@pytest.fixture()
def clock() -> SetClock:
    return SetClock(MONDAY_MORNING)


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest, clock: SetClock,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PracticePbx]:
    from tests.harness import practice_pbx as harness
    # Dr. Lee's direct line gets hours of its own (forward when closed).
    template = harness.PRACTICE.replace(
        "caller_id_name: Dr Ana Lee}}",
        "caller_id_name: Dr Ana Lee,\n     "
        + DIRECT_HOURS.replace("{", "{{").replace("}", "}}") + "}}")
    assert template != harness.PRACTICE
    monkeypatch.setattr(harness, "PRACTICE", template)
    name = "t-" + request.node.name[5:35]
    async with practice_pbx(tmp_path, name, ring_seconds=5, hours=HOURS, clock=clock) as p:
        yield p


def sip(p: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", p.ports.sip)


async def call_in(p: PracticePbx, tmp: Path, number: str) -> SippProcess:
    caller = place_calls(sip(p), tmp, number, from_user="carrier", timeout=40)
    result = await asyncio.to_thread(caller.wait, 60)
    assert result.ok, caller.describe()
    return caller


def applications(p: PracticePbx, name: str) -> list[str]:
    return [e["AppData"] for e in p.events.seen if e.get("Application") == name]


def calls(p: PracticePbx) -> list[Attempt]:
    """The calls' own records (``call:``), not the missed-call items unanswered calls add."""
    return [a for a in p.controller.journal.attempts(limit=50) if a.key.startswith("call:")]


async def journaled(p: PracticePbx, n: int) -> None:
    await p.controller.wait_rounds(lambda: len(calls(p)) >= n, within=30)


async def wait_app(p: PracticePbx, name: str, where: Callable[[str], bool]) -> str:
    event = await p.events.wait_for(
        lambda e: e.get("Application") == name and where(e.get("AppData", "")))
    return event["AppData"]


async def test_a_call_at_a_closed_time_gets_the_closed_path(
        pbx: PracticePbx, clock: SetClock, tmp_path: Path) -> None:
    ana = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "ana-desk",
                                  pbx.secret("ana-desk"), DeskPhoneMode.RING, aor="ana")
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                              port=pbx.ports.trunk, talk_ms=200)
    try:
        await pbx.driver.wait_registered({"ana"}, within=30)
        # Open (Monday 10:00 in Chicago): the main line rings Ana's desk phone.
        await call_in(pbx, tmp_path, MAIN)
        assert len(ana.invites()) == 1
        assert not any("closed-" in a for a in applications(pbx, "Playback"))
        # Closed (Monday 20:00): the closed announcement, then the main line's voicemail;
        # no desk phone rings.
        clock.set(MONDAY_EVENING)
        await call_in(pbx, tmp_path, MAIN)
        played = await wait_app(pbx, "Playback", lambda d: "closed-" in d)
        assert played.endswith("/closed-13125550100")
        box = await wait_app(pbx, "VoiceMail", lambda d: True)
        assert box.startswith("3125550100@")
        seen = [e.get("Application") for e in pbx.events.seen
                if e.get("Application") in ("Playback", "VoiceMail")]
        assert seen[-2:] == ["Playback", "VoiceMail"]  # the announcement first
        assert len(ana.invites()) == 1
        # Dr. Lee's direct line forwards to the answering service when closed, from the
        # number with its caller ID; the carrier sees it.
        await call_in(pbx, tmp_path, DIRECT)
        (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
        assert invite.start_line.startswith(f"INVITE sip:{ANSWERING_SERVICE}@")
        pai = invite.header("P-Asserted-Identity") or ""
        assert DIRECT in pai and "Dr Ana Lee" in pai, pai
        assert DIRECT in (invite.header("From") or "")
        assert PATIENT not in pai
        assert len(ana.invites()) == 1
        # Journaled at the controller's clock, each with what happened.
        await journaled(pbx, 3)
        attempts = calls(pbx)
        assert [(a.recipient, a.outcome) for a in attempts] == [
            (MAIN, Outcome.RANG), (MAIN, Outcome.VOICEMAIL), (DIRECT, Outcome.FORWARDED)]
        assert attempts[1].at >= MONDAY_EVENING
        assert attempts[1].at - MONDAY_EVENING < timedelta(minutes=5)
    finally:
        ana.kill()
        carrier.kill()


async def test_the_outage_wins_over_the_hours(
        pbx: PracticePbx, clock: SetClock, tmp_path: Path) -> None:
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                              port=pbx.ports.trunk, talk_ms=200)
    try:
        clock.set(MONDAY_EVENING)
        await pbx.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI, reason="drill")
        await call_in(pbx, tmp_path, MAIN)
        await call_in(pbx, tmp_path, DIRECT)
        await journaled(pbx, 2)
        attempts = calls(pbx)
        assert [(a.recipient, a.outcome) for a in attempts] == [
            (MAIN, Outcome.ANNOUNCED), (DIRECT, Outcome.ANNOUNCED)]
        plays = applications(pbx, "Playback")
        assert len(plays) == 2 and all(p.endswith("/announcement") for p in plays), plays
        assert applications(pbx, "VoiceMail") == []
        assert carrier.invites() == []  # not forwarded to the answering service
    finally:
        carrier.kill()


async def dial_feature(p: PracticePbx, tmp: Path, phone: str, code: str, pin: str) -> None:
    call = place_calls(sip(p), tmp, code, from_user=phone, password=p.secret(phone),
                       dtmf=pin + "#", dtmf_delay_ms=1500, timeout=30)
    result = await asyncio.to_thread(call.wait, 45)
    assert result.ok, call.describe()


async def test_an_admin_forces_closed_or_open_until_the_next_scheduled_change(
        pbx: PracticePbx, clock: SetClock, tmp_path: Path) -> None:
    ana = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "ana-desk",
                                  pbx.secret("ana-desk"), DeskPhoneMode.RING, aor="ana")
    journal = pbx.controller.journal
    try:
        await pbx.driver.wait_registered({"ana"}, within=30)
        # Monday 10:00, open.  Mia is no admin: refused and audited, nothing changes.
        await dial_feature(pbx, tmp_path, "mia-desk", "*26", OUTAGE_PIN)
        assert journal.hours_override() is None
        (refused,) = [e for e in journal.audit_log() if e.action == "hours.closed.refused"]
        assert refused.actor == "desk-phone:mia-desk" and OUTAGE_PIN not in refused.detail
        # Ana forces closed with *26 and the PIN: journaled and audited, who, when, via.
        await dial_feature(pbx, tmp_path, "ana-desk", "*26", OUTAGE_PIN)
        forced = journal.hours_override()
        assert forced is not None and forced.state is HoursState.CLOSED
        assert (forced.by, forced.via) == ("ana", "desk-phone")
        assert forced.at - MONDAY_MORNING < timedelta(minutes=5)
        (audited,) = [e for e in journal.audit_log() if e.action == "hours.closed"]
        assert audited.actor == "ana" and "ana-desk" in audited.detail
        await call_in(pbx, tmp_path, MAIN)
        played = await wait_app(pbx, "Playback", lambda d: "closed-" in d)
        assert played.endswith("/closed-13125550100")
        assert ana.invites() == []
        # Past the next scheduled change (17:00 closed, Tuesday 08:00 open): the schedule
        # rules again, Tuesday 10:00 rings.
        clock.set(MONDAY_MORNING + timedelta(days=1))
        await call_in(pbx, tmp_path, MAIN)
        assert len(ana.invites()) == 1
        # Monday evening, closed by the schedule: *27 forces open; the main line rings.
        clock.set(MONDAY_EVENING)
        await dial_feature(pbx, tmp_path, "ana-desk", "*27", OUTAGE_PIN)
        opened = journal.hours_override()
        assert opened is not None and opened.state is HoursState.OPEN
        await call_in(pbx, tmp_path, MAIN)
        assert len(ana.invites()) == 2
        # The outage wins over a forced open as over the schedule.
        await pbx.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI, reason="drill")
        await call_in(pbx, tmp_path, MAIN)
        await journaled(pbx, 4)
        assert [a.outcome for a in calls(pbx)] == [
            Outcome.VOICEMAIL, Outcome.RANG, Outcome.RANG, Outcome.ANNOUNCED]
        assert len(ana.invites()) == 2
    finally:
        ana.kill()
