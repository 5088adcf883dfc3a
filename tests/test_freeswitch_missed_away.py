"""Missed calls on FreeSWITCH whose end the controller did not hear (it went away while they
rang or were in the voicemail): one inbox item each on its return, once, read from the row
mod_cdr_csv writes with the rendered template.  Over the Event Socket's wire format only (no
FreeSWITCH runs here): the ESL test server, the rendered dialplan's fallback run once the
socket is gone, and the rendered template expanded as mod_cdr_csv expands it
(tests/harness/freeswitch_record.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backline.app.controller import Controller
from backline.core.connections import FreeswitchPbx
from backline.core.model import Directory
from backline.core.records import AttemptKind, Outcome
from backline.core.voicemail import missed_while_away
from backline.journal import open_journal
from backline.pbx.freeswitch import cdr, names
from backline.render.asterisk import voicemail_conf
from tests.harness.eslserver import Channel
from tests.harness.freeswitch_conf import expand, keeps_recording, voicemail_profile
from tests.harness.freeswitch_record import RenderedSwitch, carrier_channel
from tests.harness.freeswitch_rig import ANNOUNCEMENT, DOMAIN, FsRig, SwitchWithApps
from tests.harness.inbox_server import InboxServer
from tests.test_alerts import spellings
from tests.test_freeswitch_missed import (
    Script,
    answered,
    cancels_while_ringing,
    hangs_up_at_the_beep,
    hangs_up_in_greeting,
    registered,
    rings_out,
)
from tests.test_freeswitch_voicemail import (
    OTHER,
    PATIENT,
    SECONDS,
    TEAM,
    Left,
    MessageDb,
    controller_on,
    fire_left,
    practice,
    recording,
)

Effect = Callable[[FsRig, Channel], None]


class GoneMidCall:
    """Each call's ``blocking`` application runs until the controller is gone, then ends as
    its effect says; its other applications end at once as theirs say."""

    def __init__(self, rig: FsRig) -> None:
        self.rig = rig
        self.gone = asyncio.Event()
        self.in_hand: asyncio.Queue[str] = asyncio.Queue()
        self.endings: dict[str, tuple[str, dict[str, Effect]]] = {}
        assert isinstance(rig.server, SwitchWithApps)
        for app in ("bridge", "voicemail"):
            rig.server.app_effects[app] = self._run(app)

    def _run(self, app: str) -> Callable[[Channel, str | None], Awaitable[None]]:
        async def run(channel: Channel, arg: str | None) -> None:
            blocking, effects = self.endings.get(channel.uuid, ("", {}))
            if app == blocking:
                await self.in_hand.put(channel.uuid)
                await self.gone.wait()
            if (effect := effects.get(app)) is not None:
                effect(self.rig, channel)
        return run

    def place(self, channel: Channel, blocking: str, **effects: Effect
              ) -> asyncio.Task[object]:
        self.endings[channel.uuid] = (blocking, effects)
        return asyncio.create_task(self.rig.call(channel))


def leaves_a_message(storage: Path, db: MessageDb) -> Effect:
    """The caller speaks and hangs up; deliver_vm keeps the message (its event, heard by
    nobody now, and mod_voicemail's own record, which vm_list reads) and
    voicemail_leave_main sets ``voicemail_message_len``."""
    def leave(rig: FsRig, channel: Channel) -> None:
        path = storage / "voicemail" / names.VOICEMAIL_PROFILE / DOMAIN / TEAM[-10:] / \
            f"msg_{uuidlib.uuid4()}.wav"
        left = Left(channel, TEAM[-10:], path, recording(path))
        rig.server.hang_up(channel)
        fire_left(rig, left, db=db)
        channel.variables.update(voicemail_message_len=f"00:00:{SECONDS:02d}")
    return leave


def recorded_practice(tmp_path: Path, inbox: InboxServer) -> tuple[Directory, RenderedSwitch]:
    """The practice on FreeSWITCH, its call record in tmp_path, and its rendered switch: what
    writes the rows the controller imports on its return."""
    d = practice(tmp_path, inbox.url)
    assert isinstance(d.connections.pbx, FreeswitchPbx)
    pbx = dataclasses.replace(d.connections.pbx,
                              cdr_file=str(tmp_path / "log" / "cdr-csv" / "Master.csv"))
    d = dataclasses.replace(d, connections=dataclasses.replace(d.connections, pbx=pbx))
    return d, RenderedSwitch.render(tmp_path / "conf", d, ANNOUNCEMENT)


def call(to: str = TEAM, caller: str = PATIENT) -> Channel:
    return carrier_channel(to, caller, str(uuidlib.uuid4()))


async def test_calls_missed_while_the_controller_was_away_are_one_item_each_on_its_return(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d, switch = recorded_practice(tmp_path, inbox)
    started = int(time.time())
    db = MessageDb()
    heard, rang_out, cancelled, beep, message, taken = (
        call(), call(OTHER), call(caller="+17205550146"), call(caller="+17205550147"),
        call(caller="+17205550148"), call(caller="+17205550149"))
    async with controller_on(d, db) as (controller, rig):
        await registered(rig)
        # Heard: rang out and hung up in the greeting while the controller was up.
        await Script(rig).call(heard, bridge=rings_out, voicemail=hangs_up_in_greeting)
        switch.report(heard, started, started + 30)
        await inbox.wait_for(1, within=30)
        away = GoneMidCall(rig)
        calls = [
            away.place(rang_out, "bridge", bridge=rings_out),
            away.place(cancelled, "bridge", bridge=cancels_while_ringing),
            away.place(beep, "voicemail", bridge=rings_out, voicemail=hangs_up_at_the_beep),
            away.place(message, "voicemail", bridge=rings_out,
                       voicemail=leaves_a_message(tmp_path / "freeswitch-storage", db)),
            away.place(taken, "bridge", bridge=answered)]
        for _ in calls:
            await asyncio.wait_for(away.in_hand.get(), 30)
        # The controller goes away with five calls in hand; then each ends, unheard.
        await rig.driver.stop()
        assert controller.inbox is not None
        await controller.inbox.close()
        away.gone.set()
        for task in calls:
            await asyncio.wait_for(task, 30)
        for channel in (rang_out, cancelled, beep, message, taken):
            await switch.socket_returned(rig.server, channel)
            assert not channel.up
            switch.report(channel, started, started + 60)
        assert rang_out.variables["current_application"] == "hangup"  # the fallback ran
        assert not [a for a in controller.journal.attempts()
                    if a.key != f"missed:{heard.uuid}"
                    and (a.outcome is Outcome.MISSED or a.kind is AttemptKind.VOICEMAIL)]
    # It returns: its login lists the boxes and reads the call record; and once more.
    for _ in range(2):
        logins: asyncio.Queue[int] = asyncio.Queue()
        async with controller_on(d, db, logins) as (back, _rig):
            await asyncio.wait_for(logins.get(), 30)
            await inbox.wait_for(5, within=30)
            assert back.inbox is not None
            await back.inbox.drained(within=30)
    final = open_journal(d.connections.storage.url)
    try:
        missed = {a.key: a for a in final.attempts(limit=100) if a.outcome is Outcome.MISSED}
    finally:
        final.close()
    # The same key the live path gives a call, for the number it was decided for; the call
    # heard live not twice; the message is the message; the answered call nothing.
    assert {k: (a.recipient, a.sender) for k, a in missed.items()} == {
        f"missed:{heard.uuid}": (TEAM, PATIENT), f"missed:{rang_out.uuid}": (OTHER, PATIENT),
        f"missed:{cancelled.uuid}": (TEAM, "+17205550146"),
        f"missed:{beep.uuid}": (TEAM, "+17205550147")}
    docs = inbox.items()
    assert sorted((d["kind"], d.get("outcome"), d["from"], d["to"]) for d in docs) == sorted([
        ("call", "missed", PATIENT, TEAM), ("call", "missed", PATIENT, OTHER),
        ("call", "missed", "+17205550146", TEAM), ("call", "missed", "+17205550147", TEAM),
        ("voicemail", "voicemail", "+17205550148", TEAM)])
    assert len(inbox.keys()) == len(set(inbox.keys())) == 5
    assert [d["notify"] for d in docs if d["to"] == OTHER] == [{"users": ["mia"]}]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for c in ("+17205550146", "+17205550147") for s in spellings(c)
                if s in logged]


def test_a_recording_under_a_second_is_no_message_on_freeswitch_as_on_asterisk(
        tmp_path: Path) -> None:
    """mod_voicemail keeps a recording of whole seconds under ``min-record-len`` as no
    message (its default, 3, threw away a two-second "call me back"); app_voicemail keeps
    none under ``minsecs``: the rendered profile keeps exactly what Asterisk's voicemail.conf
    keeps, so a caller who hangs up at the beep is a missed call on both."""
    d = practice(tmp_path, "http://127.0.0.1:9/inbox")
    profile = voicemail_profile(RenderedSwitch.render(tmp_path / "conf", d, ANNOUNCEMENT).root,
                                names.VOICEMAIL_PROFILE)
    assert profile is not None
    found = re.search(r"^minsecs=([0-9]+)$", voicemail_conf(d), re.MULTILINE)
    assert found is not None
    minsecs = int(found.group(1))
    for samples in (0, 4_000, 7_999, 8_000, 12_000, 16_000, 23_999, 24_000, 8_000 * 180):
        assert keeps_recording(profile, samples) == (samples // 8_000 >= minsecs), samples
    assert not keeps_recording(profile, 7_999) and keeps_recording(profile, 8_000)


ROW_TOKEN = "an-install-s-row-token"


def row(uuid: str, last_app: str, caller: str = PATIENT, **variables: str) -> str:
    """A carrier call's row as mod_cdr_csv writes it with the rendered template (an unset
    variable expands to nothing)."""
    channel = {"uuid": uuid, "start_epoch": "1790000000", "end_epoch": "1790000040",
               names.ROUTE: names.INBOUND, names.NUMBER: TEAM, "last_app": last_app,
               "hangup_cause": "NORMAL_CLEARING", "caller_id_number": caller, **variables}
    return expand(cdr.template(ROW_TOKEN), channel) + "\n"


def test_each_rows_end_is_told_as_the_live_path_would_and_in_doubt_nothing() -> None:
    """Row by row: a call marked missable that nobody took and that left no message is a
    missed call for the number it was decided for; one answered, or whose message mod_voicemail
    kept, is none; a call not marked (the PBX answered it alone) or in the template's former
    shape tells no end, though it is still a call."""
    ids = [str(uuidlib.uuid4()) for _ in range(6)]
    mark = {names.MISSABLE: TEAM}
    # The former shape first: FreeSWITCH wrote it before it loaded the tokened template.
    text = (",".join(f'"{v}"' for v in (ids[5], "1790000000", "inbound", TEAM, "", "hangup",
                                        "NORMAL_CLEARING", PATIENT)) + "\n"
            + row(ids[0], "hangup", **mark, originate_disposition="NO_ANSWER")
            + row(ids[1], "voicemail", **mark, originate_disposition="NO_ANSWER")
            + row(ids[2], "bridge", **mark, originate_disposition="call accepted")
            + row(ids[3], "voicemail", **mark, voicemail_message_len="00:00:04")
            + row(ids[4], "hangup"))  # the fallback alone: the controller never had it
    reading = cdr.read(io.StringIO(text), ROW_TOKEN)
    assert [r.uniqueid for r in reading.rows] == [ids[5], *ids[:5]]
    ends = {e.uniqueid: e for e in reading.ends}
    assert sorted(ends) == sorted(ids[:4])
    told = {u: missed_while_away(e, []) for u, e in ends.items()}
    assert {u: (m.key, m.recipient, m.sender) for u, m in told.items() if m is not None} == {
        ids[0]: (f"missed:{ids[0]}", TEAM, PATIENT), ids[1]: (f"missed:{ids[1]}", TEAM, PATIENT)}
    assert ends[ids[0]].end == datetime.fromtimestamp(1_790_000_040, UTC)


# What sofia lets through into ``caller_id_number`` (mod_sofia.h, check_decode: the From's
# or P-Asserted-Identity's user part URL-decoded, so %22 %2C %0A reach it, and kept between
# its first and last quote; switch_caller.h, profile_dup_clean: control characters become
# spaces, but not \n or \r), written by mod_cdr_csv into the template unescaped.
SWALLOWS = '+17205550150"'  # an odd quote: the quoted field runs on into the next row
FORGED = str(uuidlib.uuid4())
FORGES = '+17205550151"\n"' + '","'.join(
    (FORGED, "1790000000", names.INBOUND, TEAM, "", "hangup", "NORMAL_CLEARING", "1790000009",
     TEAM, "NO_ANSWER", "", "+17205550199"))  # the template's closing quote ends it
COMMAS = '+1720,555"0152'
LATER = "+17205550153"


async def test_a_caller_id_that_breaks_the_rows_quoting_forges_nothing_and_loses_no_later_row(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    """Calls missed while the controller was away from callers whose number holds quotes,
    commas and a line break: on its return each is the one missed call it was, with the
    caller's number as sent; the row a caller wrote into theirs is nothing, and the call
    after them is not lost."""
    caplog.set_level(logging.DEBUG)
    d, switch = recorded_practice(tmp_path, inbox)
    started = int(time.time())
    calls = [call(caller=caller) for caller in (SWALLOWS, FORGES, COMMAS, LATER)]
    for channel in calls:  # rang desk phones, nobody took it, the fallback hung up
        channel.variables.update({names.MISSABLE: TEAM, "current_application": "hangup",
                                  names.ORIGINATE_DISPOSITION: "NO_ANSWER"})
        switch.report(channel, started, started + 20)
    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, None, logins) as (back, _rig):
        await asyncio.wait_for(logins.get(), 30)
        await inbox.wait_for(4, within=30)
        assert back.inbox is not None
        await back.inbox.drained(within=30)
        attempts = back.journal.attempts(limit=100)
    missed = {a.key: a.sender for a in attempts if a.outcome is Outcome.MISSED}
    assert missed == {f"missed:{calls[0].uuid}": SWALLOWS,
                      f"missed:{calls[1].uuid}": "+17205550151",
                      f"missed:{calls[2].uuid}": COMMAS, f"missed:{calls[3].uuid}": LATER}
    assert not [a for a in attempts if FORGED in a.key or a.sender == "+17205550199"]
    assert sorted((d["outcome"], d["from"]) for d in inbox.items()
                  if d.get("outcome") == "missed") == sorted(
        ("missed", caller) for caller in (SWALLOWS, "+17205550151", COMMAS, LATER))
    assert not [d for d in inbox.items() if FORGED in str(d)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 line(s) of the PBX's call record" in logged
    assert not [s for c in ("+17205550151", "+17205550199", LATER) for s in spellings(c)
                if s in logged]


def test_a_row_without_this_installs_token_is_nothing_and_is_counted() -> None:
    """A caller who knows the template but not the token: their line (after a line break, or
    a carriage return, in their number) with another token, or none, is no call and no end;
    the rows around it are read, and what was skipped is counted."""
    ids = [str(uuidlib.uuid4()) for _ in range(3)]
    mark = {names.MISSABLE: TEAM, "originate_disposition": "NO_ANSWER"}
    forged = row(ids[1], "hangup", **mark).replace(ROW_TOKEN, "guessed-row-token-0000")
    text = (row(ids[0], "hangup", caller=PATIENT + '"\r' + forged.rstrip("\n"), **mark)
            + row(ids[2], "hangup", caller=PATIENT + '"\n' + row(ids[1], "hangup", **mark)
                  .split(",", 1)[1].rstrip("\n"), **mark))
    reading = cdr.read(io.StringIO(text, newline=None), ROW_TOKEN)
    assert [(r.uniqueid, r.caller) for r in reading.rows] == [(ids[0], PATIENT),
                                                              (ids[2], PATIENT)]
    assert [e.uniqueid for e in reading.ends] == [ids[0], ids[2]]
    assert reading.skipped == 2


async def test_a_missing_row_token_is_on_the_status_page_and_the_calls_wait_for_it(
        tmp_path: Path, inbox: InboxServer) -> None:
    """The secrets file the controller reads (connections.pbx.secrets_file) without the row
    token FreeSWITCH writes its rows with: from the start, the status page and /status.json
    say the call record cannot be imported and how to fix it (not only the log), and the call
    missed meanwhile is not lost; the file back, ok, and it is one missed call."""
    d, switch = recorded_practice(tmp_path, inbox)
    missed = call()
    missed.variables.update({names.MISSABLE: TEAM, "current_application": "hangup",
                             names.ORIGINATE_DISPOSITION: "NO_ANSWER"})
    switch.report(missed, int(time.time()), int(time.time()) + 20)
    assert isinstance(d.connections.pbx, FreeswitchPbx)
    secrets = Path(d.connections.pbx.secrets_file)
    token = json.loads(await asyncio.to_thread(secrets.read_text))[cdr.TOKEN_KEY]
    elsewhere = tmp_path / "elsewhere.json"
    await asyncio.to_thread(secrets.rename, elsewhere)  # rendered with another --secrets

    async def status(controller: Controller) -> tuple[dict[str, object], str]:
        async with TestClient(TestServer(controller.status_app())) as http:
            doc = await (await http.get("/status.json")).json()
            page = await (await http.get("/status")).text()
        assert token not in json.dumps(doc) + page
        return dict(doc["health"]["call_record"]), page

    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, None, logins) as (away, _rig):
        at_start, page = await status(away)
        await asyncio.wait_for(logins.get(), 30)
        imported, _ = await status(away)
        assert not [a for a in away.journal.attempts() if a.outcome is Outcome.MISSED]
    for health in (at_start, imported):
        assert health["verdict"] == "failing", health
        assert str(health["says"]).startswith("the PBX's call record cannot be imported")
        assert f"--secrets {secrets}`" in str(health["says"]), health
        assert health["last_error"] == f"no row token ({secrets} is missing)", health
    assert "PBX call record" in page and "cannot be imported" in page
    await asyncio.to_thread(elsewhere.rename, secrets)
    async with controller_on(d, None, logins) as (back, _rig):
        await asyncio.wait_for(logins.get(), 30)
        fixed, _ = await status(back)
        await inbox.wait_for(1, within=30)
        attempts = back.journal.attempts()
    assert fixed["verdict"] == "ok", fixed
    assert [a.key for a in attempts if a.outcome is Outcome.MISSED] == [f"missed:{missed.uuid}"]


def test_an_untokened_line_is_only_a_former_call_and_never_a_missed_one() -> None:
    """Before FreeSWITCH loads the tokened template, a caller whose number holds a quote and a
    line break writes a line of their own after their row: read only as the released former
    shape (8 columns), and as a call at most, it gives no missed call; the caller's row
    before it is still the call it was."""
    ids = [str(uuidlib.uuid4()) for _ in range(2)]
    forged = '","'.join((ids[1], "1790000000", names.INBOUND, TEAM, "", "hangup",
                         "NORMAL_CLEARING", "1790000009", TEAM, "NO_ANSWER", "",
                         "+17205550199"))
    caller = PATIENT + '"\n"' + forged  # the former template's closing quote ends it
    text = ",".join(f'"{v}"' for v in (ids[0], "1790000000", names.INBOUND, TEAM, "",
                                        "hangup", "NORMAL_CLEARING", caller)) + "\n"
    reading = cdr.read(io.StringIO(text), ROW_TOKEN)
    assert reading.ends == ()
    assert [r.uniqueid for r in reading.rows] == [ids[0]]
    assert reading.skipped == 1


async def test_rows_with_another_installs_token_are_on_the_status_page_until_they_match(
        tmp_path: Path, inbox: InboxServer) -> None:
    """FreeSWITCH's config rendered with another secrets file than the controller reads
    (connections.pbx.secrets_file): its rows all carry another row token, so the status page
    and /status.json say the call record cannot be imported and how to fix it, no token
    shown; rendered again with the controller's file, its rows are read and it is ok."""
    d, _ = recorded_practice(tmp_path, inbox)  # the controller's token
    pbx = d.connections.pbx
    assert isinstance(pbx, FreeswitchPbx)
    other = tmp_path / "other-secrets.json"
    elsewhere = dataclasses.replace(d, connections=dataclasses.replace(
        d.connections, pbx=dataclasses.replace(pbx, secrets_file=str(other))))
    switch = RenderedSwitch.render(tmp_path / "conf", elsewhere, ANNOUNCEMENT)
    lost = call()
    for channel in (lost, later := call(caller=LATER)):
        channel.variables.update({names.MISSABLE: TEAM, "current_application": "hangup",
                                  names.ORIGINATE_DISPOSITION: "NO_ANSWER"})
    switch.report(lost, int(time.time()), int(time.time()) + 20)
    secrets = Path(pbx.secrets_file)
    tokens = [json.loads(await asyncio.to_thread(f.read_text))[cdr.TOKEN_KEY]
              for f in (secrets, other)]
    assert tokens[0] != tokens[1]

    async def status(controller: Controller) -> dict[str, object]:
        async with TestClient(TestServer(controller.status_app())) as http:
            doc = await (await http.get("/status.json")).json()
            page = await (await http.get("/status")).text()
        assert not [t for t in tokens if t in json.dumps(doc) + page]
        assert "PBX call record" in page
        return dict(doc["health"]["call_record"])

    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, None, logins) as (away, _rig):
        await asyncio.wait_for(logins.get(), 30)
        imported = await status(away)
        assert not [a for a in away.journal.attempts() if a.outcome is Outcome.MISSED]
    assert imported["verdict"] == "failing", imported
    assert str(imported["says"]).startswith("the PBX's call record cannot be imported")
    assert "another row token" in str(imported["says"]), imported
    assert f"--secrets {secrets}`" in str(imported["says"]), imported
    assert "reload mod_cdr_csv" in str(imported["says"]), imported
    assert imported["last_error"] == "its rows carry another row token", imported
    switch = RenderedSwitch.render(tmp_path / "conf", d, ANNOUNCEMENT)  # and mod_cdr_csv reloaded
    switch.report(later, int(time.time()), int(time.time()) + 20)
    async with controller_on(d, None, logins) as (back, _rig):
        await asyncio.wait_for(logins.get(), 30)
        await inbox.wait_for(1, within=30)
        fixed = await status(back)
        attempts = back.journal.attempts()
    assert fixed["verdict"] == "ok", fixed
    assert [a.key for a in attempts if a.outcome is Outcome.MISSED] == [f"missed:{later.uuid}"]
