"""Calls between staff on the real Asterisk: a desk phone dials a colleague's or a team's
extension.  SIPp desk phones; what rang is read from each phone's own message log and from
Asterisk's AMI events.  Internal calls never touch the carrier and are no patient's attempt:
nothing is journaled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness.practice_pbx import PracticePbx
from tests.harness.sipp import DeskPhoneMode, answering_phone
from tests.test_asterisk_calls import (
    call_out,
    dialled_endpoints,
    kill_all,
    outage,
    pbx,
    register_phones,
)

pytestmark = pytest.mark.asterisk
__all__ = ["pbx"]  # the fixture, shared with the routing tests


def answered(p: PracticePbx) -> list[str]:
    """Desk-phone endpoints whose leg was answered (``DialEnd`` with ``ANSWER``)."""
    return [e["DestChannel"].removeprefix("PJSIP/").rsplit("-", 1)[0]
            for e in p.events.named("DialEnd") if e.get("DialStatus") == "ANSWER"]


async def test_extension_to_extension_in_normal_and_outage_mode(
        pbx: PracticePbx, tmp_path: Path) -> None:
    carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                              port=pbx.ports.trunk, talk_ms=200)
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                   {"ana-desk": "ana", "jo-desk": "jo"})
    try:
        # Sam dials Dr. Lee's extension: her phone rings, showing Sam's name and extension,
        # and the call connects (she answers, talks, hangs up; Sam's call ends with it).
        await call_out(pbx, tmp_path, "sam-desk", "101")
        (invite,) = await asyncio.to_thread(phones["ana-desk"].wait_for_invites, 1, 30)
        sender = invite.header("From") or ""
        assert "Sam Ortiz" in sender and "sip:111@" in sender, sender
        assert answered(pbx) == ["ana-desk"]
        # In an outage too: the extension never touches the carrier.
        outage(pbx)
        await call_out(pbx, tmp_path, "mia-desk", "112")
        (invite,) = await asyncio.to_thread(phones["jo-desk"].wait_for_invites, 1, 30)
        sender = invite.header("From") or ""
        assert "Mia Chen" in sender and "sip:121@" in sender, sender
        assert answered(pbx) == ["ana-desk", "jo-desk"]
        assert carrier.invites() == []
        assert len(phones["ana-desk"].invites()) == 1
        assert pbx.controller.journal.attempts(limit=10) == []  # no patient's attempt
    finally:
        kill_all(phones)
        carrier.kill()


async def test_a_team_extension_rings_exactly_its_active_members(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # Front desk (200): sam and jo, and pat, who is deactivated.  Jo answers, sam rings.
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING,
                                   {"sam-desk": "sam", "mia-desk": "mia", "raj-desk": "raj"})
    phones.update(await register_phones(pbx, tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                        {"jo-desk": "jo"}))
    try:
        await call_out(pbx, tmp_path, "ana-desk", "200")
        await asyncio.to_thread(phones["sam-desk"].wait_for_invites, 1, 30)
        (invite,) = await asyncio.to_thread(phones["jo-desk"].wait_for_invites, 1, 30)
        assert "sip:101@" in (invite.header("From") or "")
        assert sorted(dialled_endpoints(pbx)) == ["jo-desk", "sam-desk"]
        assert answered(pbx) == ["jo-desk"]
        # At once: both legs began before either ended.
        legs = [e["Event"] for e in pbx.events.seen if e["Event"] in ("DialBegin", "DialEnd")]
        assert legs[:2] == ["DialBegin"] * 2 and "DialBegin" not in legs[2:]
        assert phones["mia-desk"].invites() == [] and phones["raj-desk"].invites() == []
    finally:
        kill_all(phones)


async def test_an_unknown_extension_is_refused(pbx: PracticePbx, tmp_path: Path) -> None:
    phones = await register_phones(pbx, tmp_path, DeskPhoneMode.RING, {"ana-desk": "ana"})
    try:
        await call_out(pbx, tmp_path, "sam-desk", "199")  # answered, refused, hung up
        played = await pbx.events.wait_for(lambda e: e.get("Application") == "Playback")
        assert played["AppData"] == "cannot-complete-as-dialed"
        assert dialled_endpoints(pbx) == [] and phones["ana-desk"].invites() == []
    finally:
        kill_all(phones)
