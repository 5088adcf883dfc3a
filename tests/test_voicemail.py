"""Voicemail by ownership, on the real Asterisk: a SIPp caller leaves a message on a team's
number and the inbox (the tests' real inbox server) files it once, with the audio, the
number's tags, its assignee and only its members to notify; a missed call is an item too; a
message left while the controller is away is taken in once when it returns."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import select
import stat
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backline.app.controller import Controller
from backline.app.serve import asterisk_driver
from backline.core.connections import AsteriskPbx
from backline.core.records import AttemptKind, Delivery, Outcome
from backline.features.voicemail.emails import VoicemailEmailFeature
from backline.journal import open_journal
from backline.localpbx.inotify import DirectoryWatch
from backline.pbx.spool_lock import folder_lock
from tests.harness.alert_site import free_port
from tests.harness.inbox_server import TOKEN_ENV, InboxServer
from tests.harness.practice_pbx import AMI_ENV, PracticePbx, practice_pbx
from tests.harness.sipp import place_calls
from tests.harness.smtp_sink import SmtpSink
from tests.harness.tones import ULAW, strongest
from tests.harness.transfer_phone import tone_file
from tests.harness.voicemail_caller import message_caller
from tests.test_alerts import everything_in, spellings, text_part
from tests.test_doctor import doctor, verdicts
from tests.test_link_pages import chromium
from tests.test_retention import held_as_app_voicemail

pytestmark = pytest.mark.asterisk

SCHED, MAIN = "+13125550102", "+13125550100"  # front-desk's line (+ raj); the practice's
PATIENT = "+17205550141"
SCHED_KEYS = "auto_assign: true, conversation_tags: [scheduling], contact_tags: [new-patient]"
TALK_MS = 14000  # the greeting takes some seven seconds of it
TONE = 440  # tests.harness.transfer_phone.tone_file's


@asynccontextmanager
async def voicemail_practice(tmp_path: Path, name: str, inbox: InboxServer,
                             **options: Any) -> AsyncIterator[PracticePbx]:
    """The test practice with the ``inbox`` fixture's inbox (its token in TOKEN_ENV), the
    scheduling line tagged and auto-assigned to its owner team, and the carrier recognised by
    address (its From carries the caller)."""
    extra = f'  inbox: {{url: "{inbox.url}", token_env: {TOKEN_ENV}}}\n' + \
        options.pop("connections_extra", "")
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


def sip(pbx: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", pbx.ports.sip)


async def leave_message(pbx: PracticePbx, tmp_path: Path, to: str = SCHED,
                        caller_name: str = "") -> None:
    audio = tone_file(tmp_path / "tone.ulaw", seconds=30)
    caller = message_caller(sip(pbx), tmp_path, to, from_user=PATIENT, audio=audio,
                            talk_ms=TALK_MS, caller_name=caller_name)
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
        # The number's own greeting (rendered beside the announcement), not Asterisk's.
        greeting = await pbx.events.wait_for(
            lambda e: e.get("Application") == "Playback" and "greeting" in e.get("AppData", ""))
        assert greeting["AppData"].endswith("/greeting-" + SCHED[2:])
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


CALLER_NAME = "Janette Quillfeather"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/v/[A-Za-z0-9_-]{43}")
OPTED_IN = {"sam": "voicemail_email: true", "raj": "voicemail_email: true",
            "ana": "voicemail_email: true"}  # ana is no member of the scheduling line


async def test_members_who_opted_in_get_only_a_link_and_chromium_plays_the_message(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    async with SmtpSink() as sink:
        extra = (f"  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, "
                 "from: backline@t.example}\n"
                 f'  pages: {{listen: "127.0.0.1:{port}", base_url: "http://127.0.0.1:{port}"}}\n')
        async with voicemail_practice(tmp_path, "vm-email", inbox, connections_extra=extra,
                                      user_keys=OPTED_IN) as pbx:
            feature = pbx.controller.feature(VoicemailEmailFeature)
            assert feature is not None
            feature.service.start()
            runner = web.AppRunner(pbx.controller.web_app())
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                await leave_message(pbx, tmp_path, caller_name=CALLER_NAME)
                emails = await sink.wait_for(2, within=30)
                await inbox.wait_for(1, within=30)
                # The number's members who opted in, each once; not ana (no member), not
                # jo (did not opt in).
                assert sorted(m.rcpt_tos[0] for m in emails) == ["raj@t.example",
                                                                 "sam@t.example"]
                # Only the link: no caller number (any spelling), name or audio.
                for m in emails:
                    text = everything_in(m)
                    for secret in (PATIENT, CALLER_NAME):
                        for spelling in spellings(secret):
                            assert spelling.lower() not in text, (spelling, m.rcpt_tos)
                    assert [p.get_content_type() for p in m.message().walk()] == [
                        "multipart/alternative", "text/plain", "text/html"]
                    assert "riff" not in text and "audio" not in text
                    assert len(LINK.findall(text_part(m))) == 1
                [doc] = inbox.items()
                seconds, _ = recording(doc)
                link = LINK.findall(text_part(next(m for m in emails
                                                   if m.rcpt_tos[0] == "sam@t.example")))[0]
                async with chromium(tmp_path / "profile") as context:
                    page = await context.new_page()
                    problems: list[str] = []
                    page.on("console",
                            lambda c: problems.append(c.text) if c.type == "error" else None)
                    response = await page.goto(link)
                    assert response is not None and response.status == 200
                    headers = await response.all_headers()
                    assert headers["cache-control"] == "no-store"
                    assert headers["referrer-policy"] == "no-referrer"
                    shown = await page.locator("section").inner_text()
                    assert PATIENT in shown and SCHED in shown
                    # The player loads the recording and plays it.
                    audio = page.locator("audio")
                    await audio.evaluate("a => a.play()")
                    # Played past its first second (a listener, not a poll: the page's CSP
                    # allows no string evaluation, which wait_for_function needs).
                    played = audio.evaluate(
                        "a => new Promise(done => { const past = () => a.currentTime > 1 "
                        "&& done(a.currentTime); past(); a.addEventListener('timeupdate', "
                        "past); })")
                    assert await asyncio.wait_for(played, 60) > 1
                    duration = await audio.evaluate("a => a.duration")
                    assert abs(duration - seconds) < 0.05, (duration, seconds)
                    assert problems == []
                actions = [e.action for e in pbx.controller.journal.audit_log()]
                assert "voicemail.view" in actions and "voicemail.listen" in actions
                # A token that is not one of ours opens nothing.
                async with aiohttp.ClientSession() as http, \
                        http.get(link[:-4] + "AAAA") as answer:
                    assert answer.status == 404
                    assert "expired or is not valid" in await answer.text()
            finally:
                await runner.cleanup()
                await feature.service.close()
    # No log line of ours names the caller or holds a link's token.
    ours = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                     if r.name != "mail.log").lower()
    for secret in (PATIENT, CALLER_NAME):
        for spelling in spellings(secret):
            assert spelling.lower() not in ours, spelling
    assert link.rsplit("/", 1)[1].lower() not in ours


async def test_only_a_member_reaches_a_numbers_voicemail_with_star_97(
        tmp_path: Path, inbox: InboxServer) -> None:
    async with voicemail_practice(tmp_path, "vm-97", inbox) as pbx:
        # Ana is no member of the scheduling line: refused, no mailbox opened.
        ana = place_calls(sip(pbx), tmp_path, "*97" + SCHED[2:], from_user="ana-desk",
                          password=pbx.secret("ana-desk"), timeout=30)
        assert (await asyncio.to_thread(ana.wait, 45)).ok, ana.describe()
        refused = await pbx.events.wait_for(
            lambda e: e.get("Application") == "Playback"
            and e.get("AppData") == "cannot-complete-as-dialed")
        assert refused["Context"] == "backline-refuse"
        assert not [e for e in pbx.events.seen if e.get("Application") == "VoiceMailMain"]
        # Raj, an extra member, reaches it.
        raj = place_calls(sip(pbx), tmp_path, "*97" + SCHED[2:], from_user="raj-desk",
                          password=pbx.secret("raj-desk"), timeout=30)
        try:
            opened = await pbx.events.wait_for(
                lambda e: e.get("Application") == "VoiceMailMain", within=30)
            assert opened["AppData"].startswith(SCHED[2:] + "@")
        finally:
            raj.kill()


def sched_inbox(pbx: PracticePbx) -> tuple[str, Path]:
    """The scheduling line's voicemail box and its INBOX folder in the spool (made now, as
    app_voicemail makes it for the first message)."""
    [box] = [n.voicemail_box for n in pbx.directory.numbers if n.number == SCHED]
    spool = pbx.instance.host_path(pbx.instance.dir("spool"))
    folder = spool / "voicemail" / "backline" / box / "INBOX"
    folder.mkdir(parents=True, exist_ok=True)
    return box, folder


async def message_left_while_locked(pbx: PracticePbx, tmp_path: Path) -> list[str]:
    """A caller leaves a message on the scheduling line while its folder is locked: once the
    call has ended, what Asterisk's log said of the lock."""
    await leave_message(pbx, tmp_path)
    recorded = await pbx.events.wait_for(lambda e: e.get("Application") == "VoiceMail",
                                         within=30)
    await pbx.events.wait_for(lambda e: e.get("Event") == "Hangup"
                              and e.get("Channel") == recorded["Channel"], within=60)
    return await asyncio.to_thread(lock_lines, pbx.instance.log_path)


def lock_lines(log: Path, within: float = 30.0) -> list[str]:
    """Asterisk's log lines of a folder lock it could not take, once there is one: its
    logger writes from a thread of its own, maybe after the Hangup event.  Sleeps on writes
    to the log's directory (inotify); AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    with DirectoryWatch(log.parent) as watch:
        while not (said := [line for line in log.read_text().splitlines()
                            if "Couldn't lock directory" in line]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"Asterisk's log never said a lock was not taken: {log}")
            select.select([watch], [], [], remaining)
            watch.drain()
    return said


async def test_app_voicemail_waits_on_the_folder_lock_retention_takes(
        tmp_path: Path, inbox: InboxServer) -> None:
    # Retention removes a spool message only under this lock (backline.pbx.spool_lock, its
    # docs in docs/storage.md): held here through a whole message, app_voicemail cannot file
    # it, so it is the lock app_voicemail takes.  Given back, nothing of it is left behind and
    # the next message is filed.
    async with voicemail_practice(tmp_path, "vm-lock", inbox) as pbx:
        box, folder = sched_inbox(pbx)
        with folder_lock(folder) as ours:
            assert ours
            said = await message_left_while_locked(pbx, tmp_path)
            assert len(said) == 1 and f"/{box}/INBOX" in said[0], said
            assert not list(folder.glob("msg*"))
        assert not [q.name for q in folder.glob(".lock*")]
        await leave_message(pbx, tmp_path)
        # The lost message's call is a missed call item; the message filed now, the second.
        await inbox.wait_for(2, within=30)
        assert [d["kind"] for d in inbox.items()] == ["call", "voicemail"]
        assert [q.name for q in sorted(folder.glob("msg*"))] == ["msg0000.txt", "msg0000.wav"]


async def test_a_folder_lock_app_voicemail_left_held_fails_doctor_and_status_until_removed(
        tmp_path: Path, inbox: InboxServer) -> None:
    # An Asterisk stopped while app_voicemail held a folder's lock leaves its `.lock`: empty,
    # as ast_lock_path makes it, so nothing says its holder is gone, and Backline removes
    # none.  app_voicemail then drops every message left there after 5 s, retention or not
    # (this practice keeps everything): doctor and the status page fail naming the box, its
    # number and the lock to remove.  Removed, both are ok and the next message is filed.
    async with voicemail_practice(tmp_path, "vm-left", inbox) as pbx:
        box, folder = sched_inbox(pbx)
        lock = held_as_app_voicemail(folder, ".lock-0badf00d")
        made = lock.stat().st_mtime
        os.utime(lock, (made - 7200, made - 7200))  # two hours before it was made: left held

        async def health() -> dict[str, Any]:
            async with TestClient(TestServer(pbx.controller.status_app())) as http:
                doc = await (await http.get("/status.json")).json()
            return dict(doc["health"]["voicemail_locks"])

        found = await asyncio.to_thread(doctor, pbx.config_path, "--json")
        checks, held = verdicts(found), await health()
        where = f"box {box}'s INBOX ({SCHED}) locked 2 h "
        assert checks["voicemail folders"].startswith(f"FAIL: {where}"), checks
        assert f"rm {lock}" in checks["voicemail folders"] and found.returncode == 1
        # Older than the Asterisk running now: none of its app_voicemail holds it.
        assert "; fix: made before the Asterisk running now started" in \
            checks["voicemail folders"], checks
        assert held["verdict"] == "failing" and held["says"].startswith(where), held
        assert "app_voicemail drops every message left there" in held["says"], held
        assert PATIENT not in found.stdout + found.stderr + json.dumps(held)

        said = await message_left_while_locked(pbx, tmp_path)  # lost, as app_voicemail says
        assert len(said) == 1 and f"/{box}/INBOX.  Voicemail will be lost" in said[0], said
        assert not list(folder.glob("msg*")) and lock.exists()
        await inbox.wait_for(1, within=30)  # the practice learns of the call: a missed one
        [missed] = inbox.items()
        assert (missed["kind"], missed["outcome"], missed["to"]) == ("call", "missed", SCHED)

        lock.unlink()  # as the fix says (the holder is gone: the test made it)
        found = await asyncio.to_thread(doctor, pbx.config_path, "--json")
        assert verdicts(found)["voicemail folders"].startswith("ok: none locked"), found.stdout
        assert (await health())["verdict"] == "ok"
        await leave_message(pbx, tmp_path)
        await inbox.wait_for(2, within=30)  # filed, then journaled and delivered
        assert inbox.items()[1]["kind"] == "voicemail"
        assert [q.name for q in sorted(folder.glob("msg*"))] == ["msg0000.txt", "msg0000.wav"]
