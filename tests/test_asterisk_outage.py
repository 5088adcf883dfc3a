"""Backup (outage) mode on the real Asterisk: switched from the CLI, the Asterisk console and
an admin's desk phone; callers hear the whole announcement; every attempt is journaled once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from backline.core.outage import Mode, Via
from backline.features.status.health import Verdict
from backline.journal import Attempt, Delivery, Outcome
from backline.journal.sqlite import SqliteJournal
from tests.harness.backline_process import ControllerProcess
from tests.harness.fax_sender import wait_for_cdr
from tests.harness.practice_pbx import OUTAGE_PIN, PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, desk_phone, place_calls

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parent.parent
DIRECT = "+13125550101"
# How long `outage engage|end` may wait for the controller to confirm its PBX has the mode
# (the CLI's default is 5 s): these tests expect it to, and a loaded machine can take longer;
# the command returns as soon as it is confirmed, so this only bounds a hang.
WAIT = ("--wait", "30")


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    name = "o-" + request.node.name[5:35]
    async with practice_pbx(tmp_path, name, ring_seconds=5) as p:
        yield p


def sip(p: PracticePbx) -> tuple[str, int]:
    return ("127.0.0.1", p.ports.sip)


def backline(p: PracticePbx, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args, "--config",
                           str(p.config_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def status(p: PracticePbx) -> dict[str, object]:
    result = backline(p, "outage", "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def announcement_seconds(p: PracticePbx) -> float:
    path = p.instance.host_path(p.instance.dir("lib") / "sounds" / "announcement.wav")
    with wave.open(str(path)) as w:
        return float(w.getnframes()) / float(w.getframerate())


async def test_engaged_from_the_cli_20_concurrent_callers_hear_the_whole_announcement(
        pbx: PracticePbx, tmp_path: Path) -> None:
    phones = {phone: await asyncio.to_thread(desk_phone, sip(pbx), tmp_path, phone,
                                             pbx.secret(phone), DeskPhoneMode.RING, aor=user)
              for phone, user in (("ana-desk", "ana"), ("mia-desk", "mia"))}
    try:
        # In a thread: the controller under test runs on this event loop, and the CLI waits
        # for it to have the PBX in the mode.
        engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason",
                                          "carrier down", "--by", "ops", *WAIT)
        assert engaged.returncode == 0, engaged.stderr
        await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
        await pbx.controller.sync_once()  # the push to the PBX follows the adoption
        assert "outage" in pbx.instance.cli("database get backline mode")
        callers = place_calls(sip(pbx), tmp_path, DIRECT, from_user="carrier", calls=20,
                              timeout=60)
        result = await asyncio.to_thread(callers.wait, 90)
        assert result.ok and result.successful == 20, callers.describe()
        for proc in phones.values():
            assert proc.invites() == []  # desk phones never ring in an outage
        # The whole announcement: each channel's Playback step lasted the recording's length
        # before the dialplan moved on to hang up.  Timed by Asterisk's own event timestamps:
        # when this loaded test process read an event says nothing of when the step began.
        length = announcement_seconds(pbx)
        assert length > 5
        started: dict[str, float] = {}
        lasted = []
        for e in pbx.events.seen:
            if e.get("Event") != "Newexten" or e.get("Context") != "backline-announce":
                continue
            if e.get("Application") == "Playback":
                started[e["Channel"]] = float(e["Timestamp"])
            elif e.get("Application") == "Hangup" and e["Channel"] in started:
                lasted.append(float(e["Timestamp"]) - started[e["Channel"]])
        assert len(lasted) == 20
        assert min(lasted) >= length - 0.25, (length, sorted(lasted)[:3])
        attempts = [a for a in pbx.controller.journal.attempts(limit=100)
                    if a.recipient == DIRECT]
        assert len(attempts) == 20 and len({a.key for a in attempts}) == 20
        assert {(a.outcome, a.mode, a.delivery) for a in attempts} == {
            (Outcome.ANNOUNCED, Mode.OUTAGE, Delivery.HELD)}
    finally:
        for proc in phones.values():
            proc.kill()


async def test_switched_on_the_asterisk_console_within_two_seconds(pbx: PracticePbx) -> None:
    await pbx.controller.sync_once()  # the PBX has agreed on "normal" once
    pbx.instance.cli("database put backline reason fiber-cut")
    pbx.instance.cli("database put backline mode outage")
    switched = pbx.controller.modes.rounds
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
    # Taken up by the round under way or the next one (one each MODE_POLL_SECONDS = 1 s):
    # counted in rounds, not read off a clock a loaded machine stretches.
    assert pbx.controller.modes.rounds - switched <= 2
    data = status(pbx)
    assert data["engaged"] is True and data["via"] == "console" and data["by"] == "console"
    assert data["reason"] == "fiber-cut"
    await pbx.controller.sync_once()
    assert "State:InUse" in pbx.instance.cli("core show hints")  # every desk phone's lamp
    pbx.instance.cli("database put backline mode normal")
    switched = pbx.controller.modes.rounds
    await pbx.controller.wait_mode(Mode.NORMAL, within=30)  # a deadline against hanging only
    assert pbx.controller.modes.rounds - switched <= 2  # the promise, in rounds as above
    data = status(pbx)
    assert data["engaged"] is False and data["via"] == "console"
    await pbx.controller.sync_once()
    assert "State:Idle" in pbx.instance.cli("core show hints")


async def test_the_mode_loop_outlives_a_locked_journal_then_takes_the_console_switch(
        pbx: PracticePbx) -> None:
    await pbx.controller.sync_once()  # the PBX has agreed on "normal" once
    journal = pbx.controller.journal
    assert isinstance(journal, SqliteJournal)
    journal.wait_on_locks(0.2)  # fail after 0.2 s instead of 30 s: a round a second
    failed = pbx.controller.failed_rounds
    # Another process holds a write transaction: every round of the controller fails.
    locker = sqlite3.connect(journal.path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        pbx.instance.cli("database put backline reason fiber-cut")
        pbx.instance.cli("database put backline mode outage")
        await pbx.controller.wait_rounds(lambda: pbx.controller.failed_rounds >= failed + 3,
                                         within=20.0)
        assert pbx.controller.mode() is Mode.NORMAL  # nothing could be recorded
    finally:
        locker.rollback()
        locker.close()
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
    data = status(pbx)
    assert data["engaged"] is True and data["via"] == "console"
    assert data["reason"] == "fiber-cut"
    metrics = pbx.controller.metrics.render().decode()
    line = next(m for m in metrics.splitlines()
                if m.startswith('backline_mode_rounds_failed_total{part="journal"}'))
    assert float(line.split()[-1]) >= 3
    # and it goes on: a CLI switch is picked up as well
    ended = await asyncio.to_thread(backline, pbx, "outage", "end", *WAIT)
    assert ended.returncode == 0 and "; in effect on the PBX at " in ended.stdout
    assert pbx.controller.mode() is Mode.NORMAL


async def test_the_consoles_by_and_reason_are_used_once(pbx: PracticePbx) -> None:
    await pbx.controller.sync_once()
    pbx.instance.cli("database put backline by kim")
    pbx.instance.cli("database put backline reason fiber-cut")
    pbx.instance.cli("database put backline mode outage")
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
    data = status(pbx)
    assert (data["by"], data["reason"]) == ("console:kim", "fiber-cut")
    await pbx.controller.sync_once()
    assert "fiber-cut" not in pbx.instance.cli("database show backline")
    assert "kim" not in pbx.instance.cli("database show backline")
    pbx.instance.cli("database put backline mode normal")  # a plain switch: no by, no reason
    await pbx.controller.wait_mode(Mode.NORMAL, within=30)
    data = status(pbx)
    assert (data["by"], data["via"]) == ("console", "console")
    assert data["reason"] == "switched on the Asterisk console"


async def test_cli_switch_reaches_the_pbx(pbx: PracticePbx) -> None:
    engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason", "drill",
                                      *WAIT)
    assert engaged.returncode == 0
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
    await pbx.controller.sync_once()
    assert "outage" in pbx.instance.cli("database get backline mode")
    assert "State:InUse" in pbx.instance.cli("core show hints")


async def test_engage_and_end_return_once_the_pbx_has_the_mode(
        pbx: PracticePbx, tmp_path: Path) -> None:
    await pbx.controller.sync_once()
    engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason", "drill",
                                      "--by", "ops", *WAIT)
    assert engaged.returncode == 0, engaged.stdout + engaged.stderr
    assert "; in effect on the PBX at " in engaged.stdout
    # Nothing awaited in between: the PBX had it when the command returned.
    assert "outage" in pbx.instance.cli("database get backline mode")
    assert pbx.controller.mode() is Mode.OUTAGE
    callers = place_calls(sip(pbx), tmp_path, DIRECT, from_user="carrier", calls=1,
                          timeout=30)
    result = await asyncio.to_thread(callers.wait, 45)
    assert result.ok and result.successful == 1, callers.describe()
    [call] = [a for a in pbx.controller.journal.attempts(limit=10) if a.recipient == DIRECT]
    assert (call.mode, call.outcome) == (Mode.OUTAGE, Outcome.ANNOUNCED)
    ended = await asyncio.to_thread(backline, pbx, "outage", "end", "--by", "ops", *WAIT)
    assert ended.returncode == 0, ended.stdout + ended.stderr
    assert "; in effect on the PBX at " in ended.stdout.splitlines()[0]
    assert "normal" in pbx.instance.cli("database get backline mode")
    assert pbx.controller.mode() is Mode.NORMAL


async def test_engage_says_when_the_controller_has_not_put_it_on_the_pbx(
        pbx: PracticePbx) -> None:
    await pbx.controller.sync_once()
    await pbx.driver.stop()  # the controller runs on, its PBX link gone
    engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason", "drill",
                                      "--wait", "2")
    assert engaged.returncode == 1
    assert "NOT in effect on the PBX after waiting" in engaged.stdout
    assert "normal" in pbx.instance.cli("database get backline mode")


async def test_engage_waits_for_backline_run_while_it_decides_calls(tmp_path: Path) -> None:
    # `backline run` as ops run it, busy deciding a stream of carrier calls (SIPp, 10 a
    # second) when the outage is engaged: the command returns once the PBX has the mode,
    # exit 0.  The harness's own controller, never started here, must not count as running:
    # it did (its mode rounds reported it, PBX link down), and engage waited for it in vain,
    # as bench.outage saw.
    async with practice_pbx(tmp_path, "o-busy-engage", controller_in_process=False) as pbx:
        controller = ControllerProcess(pbx)
        try:
            callers = place_calls(sip(pbx), tmp_path, "+13125559999", from_user="carrier",
                                  calls=20, timeout=60)
            await pbx.events.wait_for(lambda e: e.get("Application") == "AGI", within=30)
            engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason",
                                              "drill", *WAIT)
            assert engaged.returncode == 0, engaged.stdout + engaged.stderr
            assert "; in effect on the PBX at " in engaged.stdout
            assert "outage" in pbx.instance.cli("database get backline mode")
            result = await asyncio.to_thread(callers.wait, 90)
            assert result.ok and result.successful == 20, callers.describe()
        finally:
            controller.stop(kill=True)


async def dial_feature(p: PracticePbx, tmp: Path, phone: str, code: str, pin: str) -> None:
    call = place_calls(sip(p), tmp, code, from_user=phone, password=p.secret(phone),
                       dtmf=pin + "#", dtmf_delay_ms=1500, timeout=30)
    result = await asyncio.to_thread(call.wait, 45)
    assert result.ok, call.describe()


async def test_admin_desk_phone_switches_with_the_pin_and_wrong_pins_are_recorded(
        pbx: PracticePbx, tmp_path: Path) -> None:
    await dial_feature(pbx, tmp_path, "ana-desk", "*28", OUTAGE_PIN)
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)
    since = pbx.controller.state.since
    assert since is not None and since.by == "ana" and since.via is Via.DESK_PHONE
    await dial_feature(pbx, tmp_path, "ana-desk", "*29", "1111")  # wrong PIN
    await dial_feature(pbx, tmp_path, "mia-desk", "*29", OUTAGE_PIN)  # not an admin
    await pbx.controller.sync_once()
    assert pbx.controller.mode() is Mode.OUTAGE
    refusals = [e for e in pbx.controller.journal.audit_log() if e.action.endswith("refused")]
    assert [(e.actor, e.detail) for e in reversed(refusals)] == [
        ("desk-phone:ana-desk", "wrong PIN"), ("desk-phone:mia-desk", "not an admin's desk phone")]
    assert all(OUTAGE_PIN not in e.detail and "1111" not in e.detail for e in refusals)
    await dial_feature(pbx, tmp_path, "ana-desk", "*29", OUTAGE_PIN)
    await pbx.controller.wait_mode(Mode.NORMAL, within=30)


async def test_wrong_pins_lock_the_desk_phone_out_even_for_the_right_pin_until_it_ends(
        pbx: PracticePbx, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The controller's clock, moved by hand past the lockout: nothing here waits it out.
    start = datetime.now(UTC)
    pbx.controller.clock = lambda: start
    for _ in range(3):
        await dial_feature(pbx, tmp_path, "ana-desk", "*28", "1111")
    await dial_feature(pbx, tmp_path, "ana-desk", "*28", OUTAGE_PIN)  # within the lockout
    await pbx.controller.sync_once()
    assert pbx.controller.mode() is Mode.NORMAL
    entries = [e for e in reversed(pbx.controller.journal.audit_log())
               if e.actor == "desk-phone:ana-desk"]
    assert [(e.action, e.detail) for e in entries] == [
        ("outage.outage.refused", "wrong PIN"), ("outage.outage.refused", "wrong PIN"),
        ("outage.outage.refused", "wrong PIN"),
        ("outage.pin.lockout", "3 wrong PINs in a row; locked out for 30 s"),
        ("outage.outage.refused", "locked out")]
    assert all(OUTAGE_PIN not in e.detail and "1111" not in e.detail for e in entries)
    loud = [r for r in caplog.records if "LOCKED OUT" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelname == "ERROR"
    assert OUTAGE_PIN not in loud[0].getMessage() and "1111" not in loud[0].getMessage()
    # After the lockout the right PIN switches as before.
    pbx.controller.clock = lambda: start + timedelta(seconds=31)
    await dial_feature(pbx, tmp_path, "ana-desk", "*28", OUTAGE_PIN)
    await pbx.controller.wait_mode(Mode.OUTAGE, within=30)


async def test_controller_killed_the_pbx_answers_alone_and_nothing_is_lost(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "o-failsafe", controller_in_process=False) as pbx:
        controller = ControllerProcess(pbx)
        try:
            assert backline(pbx, "outage", "engage", "--reason", "drill", *WAIT).returncode == 0
            controller.wait_for("mode is now outage", 30)
            controller.stop(kill=True)  # SIGKILL: no goodbye, no flush
            callers = place_calls(sip(pbx), tmp_path, DIRECT, from_user="carrier", calls=20,
                                  timeout=60)
            result = await asyncio.to_thread(callers.wait, 90)
            assert result.ok and result.successful == 20, callers.describe()
            # Every call was answered by the PBX alone with the announcement: one Playback
            # step per call (the tests' own AMI session saw them), each the announcement.
            played = [e for e in pbx.events.seen
                      if e.get("Event") == "Newexten" and e.get("Application") == "Playback"]
            assert len(played) == 20 and len({e["Channel"] for e in played}) == 20, played
            assert all(e["Context"] == "backline-announce"
                       and e["AppData"].endswith("/announcement") for e in played), played
            journal = pbx.controller.journal
            assert [a for a in journal.attempts(limit=100) if a.recipient == DIRECT] == []
            controller = ControllerProcess(pbx)
            controller.wait_for("20 call(s) answered by the PBX", 60)
            for _ in range(2):  # restarting again imports nothing twice
                controller.stop()
                controller = ControllerProcess(pbx)
            attempts = [a for a in journal.attempts(limit=100) if a.recipient == DIRECT]
            assert len(attempts) == 20 and len({a.key for a in attempts}) == 20
            assert {(a.outcome, a.mode, a.delivery) for a in attempts} == {
                (Outcome.ANNOUNCED, Mode.OUTAGE, Delivery.HELD)}
        finally:
            controller.stop(kill=True)


async def test_a_call_the_fail_safe_takes_while_the_controller_is_up_is_journaled_at_once(
        pbx: PracticePbx, tmp_path: Path) -> None:
    # The controller stays up and logged in to AMI, but one call gets no decision: its
    # FastAGI listener refuses (as a listener past its backlog does under load), so the
    # dialplan's fail-safe answers alone.  The call is journaled from the fail-safe's user
    # event, without a new login, and the CDR import later adds nothing twice.
    engaged = await asyncio.to_thread(backline, pbx, "outage", "engage", "--reason", "drill",
                                      *WAIT)
    assert engaged.returncode == 0, engaged.stdout + engaged.stderr
    logins = pbx.driver.ami.logins
    await pbx.driver.agi.stop()
    callers = place_calls(sip(pbx), tmp_path, DIRECT, from_user="carrier", calls=1,
                          timeout=30)
    result = await asyncio.to_thread(callers.wait, 45)
    assert result.ok and result.successful == 1, callers.describe()
    [played] = [e for e in pbx.events.seen
                if e.get("Event") == "Newexten" and e.get("Application") == "Playback"]
    assert played["Context"] == "backline-announce", played  # the fail-safe took it
    journal = pbx.controller.journal

    def calls() -> list[Attempt]:
        return [a for a in journal.attempts(limit=10) if a.recipient == DIRECT]

    await pbx.controller.wait_rounds(lambda: len(calls()) == 1, within=30)
    [call] = calls()
    assert call.key == f"call:{played['Uniqueid']}"
    assert (call.outcome, call.mode, call.delivery) == (
        Outcome.ANNOUNCED, Mode.OUTAGE, Delivery.HELD)
    assert pbx.driver.ami.logins == logins and pbx.driver.ami.up
    assert pbx.controller.cdr_path is not None
    await asyncio.to_thread(wait_for_cdr, pbx.controller.cdr_path,
                            lambda row: row.uniqueid == played["Uniqueid"], 30)
    assert await pbx.controller.import_pbx_record() == 0
    assert calls() == [call]


def link_gauge(p: PracticePbx) -> float:
    text = p.controller.metrics.render().decode()
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith('backline_pbx_link_up{pbx="asterisk"}')))


async def test_the_status_page_and_metrics_follow_the_pbx_link(pbx: PracticePbx) -> None:
    runner = web.AppRunner(pbx.controller.status_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    controller = pbx.controller

    def link() -> Verdict:
        return controller.health["pbx_link"].verdict

    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
            async def health() -> dict[str, dict[str, object]]:
                async with http.get("/status.json") as response:
                    doc = await response.json()
                    return dict(doc["health"])

            await controller.wait_rounds(lambda: link() is Verdict.OK, within=30)
            doc = await health()
            assert doc["pbx_link"]["verdict"] == "ok" and doc["pbx_link"]["last_success"]
            assert doc["pbx_link"]["says"] == "the PBX link is up"
            assert link_gauge(pbx) == 1.0
            # Neither alerts nor an inbox in this practice: each says so, and why.
            assert doc["alerts"]["verdict"] == "off"
            assert "backup.alerts.emails" in str(doc["alerts"]["says"])
            assert doc["inbox"]["verdict"] == "off"
            assert doc["inbox"]["says"] == ("held items cannot be delivered: "
                                            "connections.inbox is not configured")
            await asyncio.to_thread(pbx.instance.kill)
            await controller.wait_rounds(lambda: link() is Verdict.FAILING, within=30)
            doc = await health()
            assert doc["pbx_link"]["says"] == "the PBX link is down"
            assert doc["pbx_link"]["last_error_at"] and doc["pbx_link"]["last_success"]
            assert link_gauge(pbx) == 0.0
            async with http.get("/status") as response:
                page = await response.text()
            assert "PBX link" in page and "the PBX link is down" in page
            await asyncio.to_thread(pbx.instance.start)
            await controller.wait_rounds(lambda: link() is Verdict.OK, within=30.0)
            assert link_gauge(pbx) == 1.0
            assert (await health())["pbx_link"]["says"] == "the PBX link is up"
    finally:
        await runner.cleanup()
