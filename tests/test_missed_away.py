"""A missed call whose end the controller did not hear (it was stopped) is an inbox item when
it returns, once: told from the PBX's call record at its login (docs/voicemail.md); so is a
caller who hangs up at the voicemail's beep, with the controller up or away, and no empty
message is kept.  On the real Asterisk, with a SIPp desk phone that rings, SIPp callers and
the tests' inbox."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from backline.app.controller import Controller
from backline.app.serve import asterisk_driver
from backline.core.connections import AsteriskPbx
from backline.core.records import AttemptKind, Outcome
from backline.journal import open_journal
from tests.harness.cancelling_caller import hang_up, ringing_caller
from tests.harness.fax_sender import wait_for_cdr
from tests.harness.inbox_server import InboxServer
from tests.harness.practice_pbx import AMI_ENV, PracticePbx
from tests.harness.sipp import DeskPhoneMode, desk_phone
from tests.harness.transfer_phone import tone_file
from tests.harness.voicemail_caller import answered_caller, message_caller
from tests.test_alerts import spellings
from tests.test_voicemail import PATIENT, SCHED, TALK_MS, sip, voicemail_practice

pytestmark = pytest.mark.asterisk

ANA = "+13125550101"  # Dr Ana Lee's line: no desk phone of hers is registered, to voicemail


@asynccontextmanager
async def controller_back(pbx: PracticePbx) -> AsyncIterator[Controller]:
    """A new controller on the same journal (a restart), once its login's import is done and
    its inbox has sent what it holds."""
    back = Controller(pbx.directory, open_journal(pbx.directory.connections.storage.url))
    back.faxes.spool = pbx.controller.faxes.spool
    config = pbx.directory.connections.pbx
    assert isinstance(config, AsteriskPbx)
    driver = asterisk_driver(back, config, os.environ[AMI_ENV])
    back.attach(driver)
    assert back.inbox is not None
    back.inbox.start()
    try:
        await driver.start()
        await asyncio.wait_for(back.record_imported.wait(), 60)
        await back.inbox.drained(within=30)
        yield back
    finally:
        await back.inbox.close()
        await driver.stop()
        back.journal.close()


def call_row(pbx: PracticePbx, context: str = "backline-voicemail") -> None:
    """Wait for a call's row ending in ``context`` in the PBX's call record: Asterisk writes
    it once the caller's channel is gone, after the h extension (which marks it, and tells
    the controller if up), so a login before it would not see the call."""
    config = pbx.directory.connections.pbx
    assert isinstance(config, AsteriskPbx)
    wait_for_cdr(Path(config.cdr_file), lambda r: r.context == context, 60)


async def test_a_call_missed_while_the_controller_was_away_is_one_item_on_its_return(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Desk phones ring long enough that the caller, not the ring timeout, ends the call.
    async with voicemail_practice(tmp_path, "vm-missaway", inbox, ring_seconds=120) as pbx:
        phone = await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, "jo-desk",
                                        pbx.secret("jo-desk"), DeskPhoneMode.RING, aor="jo")
        try:
            await pbx.driver.wait_registered({"jo"}, within=30)
            # A carrier call rings jo's desk phone; another leaves a message on Ana's line.
            ringing = ringing_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT)
            await asyncio.to_thread(phone.wait_for_invites, 1, 30)
            leaving = message_caller(sip(pbx), tmp_path, ANA, from_user=PATIENT,
                                     audio=tone_file(tmp_path / "tone.ulaw", seconds=30),
                                     talk_ms=TALK_MS)
            await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail",
                                      within=30)
            # The controller goes away; then the first caller hangs up while it rings, the
            # second after speaking: neither end reaches anybody.
            await pbx.driver.stop()
            assert pbx.controller.inbox is not None
            await pbx.controller.inbox.close()
            await asyncio.to_thread(hang_up, ringing)
            assert (await asyncio.to_thread(ringing.wait, 30)).ok, ringing.describe()
            assert (await asyncio.to_thread(leaving.wait, 60)).ok, leaving.describe()
            await asyncio.to_thread(call_row, pbx, "backline-ring")
            await asyncio.to_thread(call_row, pbx)
        finally:
            phone.kill()
        journal = pbx.controller.journal
        assert not [a for a in journal.attempts() if a.outcome is Outcome.MISSED
                    or a.kind is AttemptKind.VOICEMAIL]
        # It returns: its first login reads the call record and the spool.
        async with controller_back(pbx):
            await inbox.wait_for(2, within=30)
        # And once more (a restart): nothing new, nothing twice.
        async with controller_back(pbx) as again:
            assert again.record_imported.is_set()
        docs = sorted(inbox.items(), key=lambda d: d["kind"])
        assert [(d["kind"], d.get("outcome"), d["from"], d["to"]) for d in docs] == [
            ("call", "missed", PATIENT, SCHED), ("voicemail", "voicemail", PATIENT, ANA)], docs
        assert docs[0]["notify"] == {"users": ["jo", "sam"]}
        assert len(inbox.keys()) == len(set(inbox.keys())) == 2
        final = open_journal(pbx.directory.connections.storage.url)
        try:
            missed = [a for a in final.attempts(limit=1000) if a.outcome is Outcome.MISSED]
        finally:
            final.close()
        # The key the live path gives it (the caller's channel that rang jo's phone), so a
        # call whose end was heard is never journaled twice.
        [rang] = [e for e in pbx.events.named("DialBegin")
                  if e.get("DestChannel", "").startswith("PJSIP/jo-desk-")]
        assert [(a.key, a.recipient, a.sender) for a in missed] == [
            (f"missed:{rang['Uniqueid']}", SCHED, PATIENT)]
        # No caller number in any log line, in any spelling.
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert not [s for s in spellings(PATIENT) if s in logged]




async def test_a_caller_hanging_up_at_the_beep_is_one_missed_call_not_an_empty_message(
        tmp_path: Path, inbox: InboxServer) -> None:
    async with voicemail_practice(tmp_path, "vm-beep-up", inbox) as pbx:
        # The caller reaches the voicemail (no desk phone of the line's is registered), says
        # nothing and hangs up as the recording starts.
        caller = answered_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT)
        await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail", within=30)
        await asyncio.to_thread(hang_up, caller, 200)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        await inbox.wait_for(1, within=40)
        await asyncio.to_thread(call_row, pbx)
        # A login reads the call record and the spool again: nothing twice.
        await pbx.controller.import_pbx_record()
        assert pbx.controller.inbox is not None
        await pbx.controller.inbox.drained(within=30)
        docs = inbox.items()
        assert [(d["kind"], d["outcome"], d["from"], d["to"]) for d in docs] == [
            ("call", "missed", PATIENT, SCHED)], docs
        assert not [a for a in pbx.controller.journal.attempts()
                    if a.kind is AttemptKind.VOICEMAIL]
        # No empty message is left for members' *97 either.
        spool = pbx.instance.host_path(pbx.instance.dir("spool")) / "voicemail"
        assert not list(spool.rglob("msg*")), list(spool.rglob("msg*"))


async def test_a_caller_hanging_up_at_the_beep_while_the_controller_is_away_is_one_item(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with voicemail_practice(tmp_path, "vm-beep-away", inbox) as pbx:
        caller = answered_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT)
        started = await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail",
                                            within=30)
        # The controller goes away once the call is in the voicemail; then the caller hangs
        # up without a word.
        await pbx.driver.stop()
        assert pbx.controller.inbox is not None
        await pbx.controller.inbox.close()
        await asyncio.to_thread(hang_up, caller, 200)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        await asyncio.to_thread(call_row, pbx)
        assert not [a for a in pbx.controller.journal.attempts()
                    if a.outcome is Outcome.MISSED or a.kind is AttemptKind.VOICEMAIL]
        async with controller_back(pbx):
            await inbox.wait_for(1, within=30)
        async with controller_back(pbx) as again:  # and a restart: nothing twice
            assert again.record_imported.is_set()
        docs = inbox.items()
        assert [(d["kind"], d["outcome"], d["from"], d["to"]) for d in docs] == [
            ("call", "missed", PATIENT, SCHED)], docs
        assert docs[0]["notify"] == {"users": ["jo", "sam"]}
        final = open_journal(pbx.directory.connections.storage.url)
        try:
            missed = [(a.key, a.recipient) for a in final.attempts(limit=1000)
                      if a.outcome is Outcome.MISSED]
        finally:
            final.close()
        assert missed == [(f"missed:{started['Uniqueid']}", SCHED)]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert not [s for s in spellings(PATIENT) if s in logged]
