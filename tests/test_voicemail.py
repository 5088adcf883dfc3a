"""Voicemail by ownership, on the real Asterisk: a SIPp caller leaves a message on a team's
number and the inbox (the tests' real inbox server) files it once, with the audio, the
number's tags, its assignee and only its members to notify; a missed call is an item too; a
message left while the controller is away is taken in once when it returns."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import stat
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from backline.app.controller import Controller
from backline.app.serve import asterisk_driver
from backline.core.connections import AsteriskPbx
from backline.core.records import AttemptKind, Delivery, Outcome
from backline.journal import open_journal
from tests.harness.inbox_server import InboxServer
from tests.harness.practice_pbx import AMI_ENV, PracticePbx, practice_pbx
from tests.harness.tones import ULAW, strongest
from tests.harness.transfer_phone import tone_file
from tests.harness.voicemail_caller import message_caller

pytestmark = pytest.mark.asterisk

SCHED, MAIN = "+13125550102", "+13125550100"  # front-desk's line (+ raj); the practice's
PATIENT = "+17205550141"
TOKEN = "inbox-token-for-the-voicemail-tests"
TOKEN_ENV = "BACKLINE_TEST_VOICEMAIL_INBOX_TOKEN"
SCHED_KEYS = "auto_assign: true, conversation_tags: [scheduling], contact_tags: [new-patient]"
TALK_MS = 14000  # the greeting takes some seven seconds of it
TONE = 440  # tests.harness.transfer_phone.tone_file's


@asynccontextmanager
async def voicemail_practice(tmp_path: Path, name: str, inbox: InboxServer,
                             **options: Any) -> AsyncIterator[PracticePbx]:
    """The test practice with an inbox, the scheduling line tagged and auto-assigned to its
    owner team, and the carrier recognised by address (its From carries the caller)."""
    extra = f'  inbox: {{url: "{inbox.url}", token_env: {TOKEN_ENV}}}\n' + \
        options.pop("connections_extra", "")
    with pytest.MonkeyPatch.context() as env:  # restored after the practice (test_hygiene)
        env.setenv(TOKEN_ENV, TOKEN)
        async with practice_pbx(tmp_path, name, connections_extra=extra,
                                carrier_from_user=False, number_keys={SCHED: SCHED_KEYS},
                                **options) as pbx:
            # As `backline up` sets it for its own instance (`run` asks Asterisk).
            pbx.controller.faxes.spool = pbx.instance.host_path(pbx.instance.dir("spool"))
            drain = pbx.controller.inbox
            assert drain is not None
            drain.start()
            try:
                yield pbx
            finally:
                await drain.close()


@pytest.fixture()
async def inbox(tmp_path: Path) -> AsyncIterator[InboxServer]:
    server = InboxServer(tmp_path / "inbox.db", token=TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sip(pbx: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", pbx.ports.sip)


async def leave_message(pbx: PracticePbx, tmp_path: Path, to: str = SCHED) -> None:
    audio = tone_file(tmp_path / "tone.ulaw", seconds=30)
    caller = message_caller(sip(pbx), tmp_path, to, from_user=PATIENT, audio=audio,
                            talk_ms=TALK_MS)
    result = await asyncio.to_thread(caller.wait, 60)
    assert result.ok, caller.describe()


def recording(doc: dict[str, Any]) -> tuple[float, list[int]]:
    """The WAV the inbox received: its length (by Python's own reader) and its samples."""
    data = base64.b64decode(doc["file"]["data"])
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        frames = w.readframes(w.getnframes())
        seconds = w.getnframes() / w.getframerate()
    samples = [int.from_bytes(frames[i:i + 2], "little", signed=True)
               for i in range(0, len(frames), 2)]
    return seconds, samples


def share_of_tone(samples: list[int]) -> float:
    """How many 20 ms frames of ``samples`` are the caller's tone."""
    frames = [samples[i:i + 160] for i in range(0, len(samples) - 159, 160)]
    heard = sum(1 for f in frames if strongest(f, [TONE, 1000])[0] == TONE
                and strongest(f, [TONE, 1000])[1] >= 0.6)
    return heard / max(len(frames), 1)


async def test_a_message_on_a_team_number_reaches_the_inbox_once_by_ownership(
        tmp_path: Path, inbox: InboxServer) -> None:
    assert ULAW  # the tone file is µ-law, as the caller sends it
    async with voicemail_practice(tmp_path, "vm-inbox", inbox) as pbx:
        await leave_message(pbx, tmp_path)
        await inbox.wait_for(1, within=30)
        journal = pbx.controller.journal
        [message] = [a for a in journal.attempts() if a.kind is AttemptKind.VOICEMAIL]
        assert (message.sender, message.recipient, message.outcome, message.mode.value) == (
            PATIENT, SCHED, Outcome.VOICEMAIL, "normal")
        # Kept by Backline only: 0600 in a 0700 directory.
        kept = Path(message.file)
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(kept.parent).st_mode) == 0o700
        assert pbx.controller.inbox is not None
        await pbx.controller.inbox.drained(within=30)
        # A login reads the whole spool again (a restart would): nothing is filed twice.
        await pbx.controller.import_pbx_record()
        await pbx.controller.inbox.drained(within=30)
        docs = inbox.items()
        assert [d["kind"] for d in docs] == ["voicemail"], docs
        [doc] = docs
        assert doc["conversation"] == {"number": SCHED, "party": PATIENT}
        assert (doc["conversation_tags"], doc["contact_tags"]) == (["scheduling"],
                                                                   ["new-patient"])
        assert doc["assign_to"] == "team:front-desk"
        # Only the number's members: front-desk's active members (pat is deactivated);
        # never ana, mia or anyone else in the practice.
        assert doc["notify"] == {"users": ["jo", "sam"]}
        assert inbox.notifications() == [(inbox.keys()[0], ["jo", "sam"])]
        # The audio: the caller's tone, as long as the item says, and no longer than the
        # caller talked (the greeting and the beep came first).
        seconds, samples = recording(doc)
        assert doc["voicemail"]["duration_seconds"] == round(seconds, 2)
        assert 1.0 < seconds < TALK_MS / 1000
        assert abs(seconds - int(message.detail.removesuffix(" s"))) <= 1.0  # app_voicemail's
        assert share_of_tone(samples) > 0.8
        assert inbox.tries() == 1
        assert journal.attempt(message.key).delivery is Delivery.DELIVERED  # type: ignore[union-attr]


async def test_a_call_nobody_answered_that_left_no_message_is_a_missed_call_item(
        tmp_path: Path, inbox: InboxServer) -> None:
    async with voicemail_practice(tmp_path, "vm-missed", inbox) as pbx:
        # The caller hangs up a second into the greeting (some five seconds long): no beep,
        # no message.
        audio = tone_file(tmp_path / "tone.ulaw", seconds=5)
        caller = message_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=audio,
                                talk_ms=1000)
        assert (await asyncio.to_thread(caller.wait, 30)).ok, caller.describe()
        await inbox.wait_for(1, within=40)
        [doc] = inbox.items()
        assert (doc["kind"], doc["outcome"], doc["from"], doc["to"]) == (
            "call", "missed", PATIENT, SCHED)
        assert doc["notify"] == {"users": ["jo", "sam"]}
        assert "file" not in doc


async def test_a_message_left_while_the_controller_is_away_is_delivered_once_on_return(
        tmp_path: Path, inbox: InboxServer) -> None:
    async with voicemail_practice(tmp_path, "vm-away", inbox) as pbx:
        audio = tone_file(tmp_path / "tone.ulaw", seconds=30)
        caller = message_caller(sip(pbx), tmp_path, SCHED, from_user=PATIENT, audio=audio,
                                talk_ms=TALK_MS)
        # The controller sent the call to voicemail, then goes away while the caller speaks:
        # the end of the call reaches nobody.
        await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail", within=30)
        await pbx.driver.stop()
        drain = pbx.controller.inbox
        assert drain is not None
        await drain.close()
        assert (await asyncio.to_thread(caller.wait, 60)).ok, caller.describe()
        journal = pbx.controller.journal
        assert not [a for a in journal.attempts() if a.kind is not AttemptKind.CALL
                    or a.outcome is Outcome.MISSED]
        # It returns: a new controller on the same journal, whose first login reads the
        # spool.
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
            await inbox.wait_for(1, within=30)
            await back.inbox.drained(within=30)
            # Another login (a reconnect, a restart) reads the spool again: nothing twice.
            await back.import_pbx_record()
            await back.inbox.drained(within=30)
        finally:
            await back.inbox.close()
            await driver.stop()
            back.journal.close()
        [doc] = inbox.items()
        assert (doc["kind"], doc["from"], doc["to"], doc["assign_to"]) == (
            "voicemail", PATIENT, SCHED, "team:front-desk")
        seconds, samples = recording(doc)
        assert doc["voicemail"]["duration_seconds"] == round(seconds, 2) and seconds > 1.0
        assert share_of_tone(samples) > 0.8
        assert inbox.tries() == 1
