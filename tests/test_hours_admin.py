"""The hours override outside the phone: ``backline hours status|open|closed|auto`` (real
subprocesses, a real SQLite journal) and the status page of a running controller.  Every
moment is set by the test (``--at``, the controller's clock), none is waited for."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backline.app import config
from backline.app.controller import Controller
from backline.core.decisions import InboundCall, PlayClosedAnnouncement, SendToVoicemail
from backline.core.hours import HoursOverride, HoursState, hours_now
from backline.core.model import Hours
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.journal import open_journal
from backline.pbx.inbound import decide_inbound

from .test_hours import PRACTICE_YAML, hours, utc

__all__ = ["hours"]  # the fixture

ROOT = Path(__file__).resolve().parent.parent
MAIN = "+13125550100"


@pytest.fixture()
def practice(tmp_path: Path) -> Path:
    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML.replace("sqlite:///tmp/never-created.db",
                                          f"sqlite://{tmp_path / 'journal.db'}"))
    return path


def backline_hours(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", "hours", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def status(practice: Path, at: str) -> dict[str, dict[str, object]]:
    done = backline_hours("status", str(practice), "--at", at, "--json")
    assert done.returncode == 0, done.stderr
    return {row["applies_to"]: row for row in json.loads(done.stdout)}


def test_status_says_the_state_why_and_until_when(practice: Path) -> None:
    # Mon 10:00 CST: open by the schedule until lunch (12:00 CST, 18:00 UTC).
    rows = status(practice, "2026-01-05T10:00")
    assert rows["practice"] == {"applies_to": "practice", "state": "open", "why": "schedule",
                                "until": "2026-01-05T18:00:00+00:00", "override": None}
    # Christmas Day: closed for the holiday, until Saturday 20:00 CST opens the night line.
    xmas = status(practice, "2026-12-25T12:00")["practice"]
    assert (xmas["state"], xmas["why"], xmas["until"]) == \
        ("closed", "holiday", "2026-12-27T02:00:00+00:00")
    text = backline_hours("status", str(practice), "--at", "2026-12-25T12:00")
    assert text.returncode == 0
    assert "practice: CLOSED until 2026-12-26 20:00:00 (holiday)" in text.stdout.splitlines()
    # The direct line has its own hours, shown with them.
    assert status(practice, "2026-01-05T10:00")["+13125550101"]["state"] == "open"


def test_closed_then_auto_from_the_cli_is_journaled_audited_and_shown(practice: Path) -> None:
    forced = backline_hours("closed", str(practice), "--at", "2026-01-05T10:00", "--by", "ops")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("hours forced closed at 2026-01-05 10:00:00 by ops, until "
                                    "the next scheduled change\n")
    row = status(practice, "2026-01-05T11:00")["practice"]
    assert row == {"applies_to": "practice", "state": "closed", "why": "override",
                   "until": "2026-01-05T18:00:00+00:00",
                   "override": {"state": "closed", "at": "2026-01-05T16:00:00+00:00",
                                "by": "ops", "via": "cli"}}
    # Past the next scheduled change (lunch), the schedule rules again.
    assert status(practice, "2026-01-05T13:00")["practice"]["why"] == "schedule"
    handed_back = backline_hours("auto", str(practice), "--at", "2026-01-05T11:30", "--by", "ana")
    assert handed_back.returncode == 0, handed_back.stderr
    assert status(practice, "2026-01-05T11:31")["practice"]["state"] == "open"
    d = config.load(practice).directory
    journal = open_journal(d.connections.storage.url)
    try:
        audit = [(e.actor, e.action) for e in journal.audit_log(10)]
        assert audit == [("ana", "hours.auto"), ("ops", "hours.closed")]
        latest = journal.hours_override()
        assert latest == HoursOverride(None, utc("2026-01-05 17:30"), "ana", "cli")
    finally:
        journal.close()


def test_bad_input_gets_a_clear_error_and_changes_nothing(practice: Path,
                                                          tmp_path: Path) -> None:
    bad = backline_hours("open", str(practice), "--at", "tomorrow morning")
    assert bad.returncode == 2 and "--at: expected an ISO 8601 time" in bad.stderr
    assert status(practice, "2026-01-05T10:00")["practice"]["why"] == "schedule"
    no_hours = tmp_path / "no-hours.yaml"
    no_hours.write_text(PRACTICE_YAML.split("hours:\n")[0] + "numbers:\n  - {number: \"" + MAIN
                        + "\"}\nconnections:\n  storage: {url: \"sqlite://"
                        + str(tmp_path / "other.db") + "\"}\n")
    refused = backline_hours("closed", str(no_hours))
    assert refused.returncode == 2 and "no hours: section" in refused.stderr
    assert not (tmp_path / "other.db").exists()


def test_a_moment_at_the_edge_of_the_calendar_is_a_usage_error(practice: Path) -> None:
    # East of UTC, year 1's first minute is in year 0 in UTC; Chicago's last is past 9999.
    for at in ("0001-01-01T00:00+05:00", "9999-12-31T23:59", "0001-01-01T00:00"):
        done = backline_hours("closed", str(practice), "--at", at)
        assert done.returncode == 2, done.stderr
        assert "--at" in done.stderr and "out of range" in done.stderr
        assert "Traceback" not in done.stderr
    assert status(practice, "2026-01-05T10:00")["practice"]["why"] == "schedule"


async def test_a_running_controller_takes_up_the_cli_override_and_shows_it(
        practice: Path) -> None:
    d = config.load(practice).directory
    journal = open_journal(d.connections.storage.url)
    now = utc("2026-01-05 17:00")  # Mon 11:00 CST: open by the schedule
    controller = Controller(d, journal, clock=lambda: now)
    book = OwnershipBook(d)
    log = logging.getLogger("test")

    async def decision() -> object:
        call = InboundCall(MAIN, "+17205550141")
        decided = await decide_inbound(book, Registrations(book, 3), call, controller.mode(),
                                       20, None, "u1", controller.clock(), log,
                                       controller.hours_override)
        return decided.decision

    try:
        async with TestClient(TestServer(controller.status_app())) as http:
            async def shown() -> dict[str, object]:
                body = await (await http.get("/status.json")).json()
                rows = {row["applies_to"]: row for row in body["hours"]}
                page = await (await http.get("/status")).text()
                assert "<h2>Hours</h2>" in page
                row: dict[str, object] = rows["practice"]
                return row

            assert (await shown())["why"] == "schedule"
            assert await decision() == SendToVoicemail(MAIN, "3125550100")
            forced = backline_hours("closed", str(practice), "--at", "2026-01-05T10:30",
                                    "--by", "ops")
            assert forced.returncode == 0, forced.stderr
            await controller.sync_once()  # one round
            row = await shown()
            assert (row["state"], row["why"]) == ("closed", "override")
            assert row["override"] == {"state": "closed", "at": "2026-01-05T16:30:00+00:00",
                                       "by": "ops", "via": "cli"}
            assert await decision() == PlayClosedAnnouncement(MAIN, "3125550100")
            backline_hours("auto", str(practice), "--at", "2026-01-05T10:45", "--by", "ops")
            await controller.sync_once()
            assert (await shown())["why"] == "schedule"
            assert await decision() == SendToVoicemail(MAIN, "3125550100")  # nobody registered
    finally:
        await controller.close()
        journal.close()



def test_hours_now_explains_the_override_while_it_holds(hours: Hours) -> None:
    at = utc("2026-01-05 16:00")  # Mon 10:00 CST
    forced = HoursOverride(HoursState.CLOSED, at, "ana", "desk-phone")
    now = hours_now(hours, at + timedelta(minutes=5), forced)
    assert (now.state, now.why.value, now.until, now.override) == \
        (HoursState.CLOSED, "override", utc("2026-01-05 18:00"), forced)
    after = hours_now(hours, utc("2026-01-05 19:00"), forced)
    assert (after.state, after.why.value, after.override) == (HoursState.OPEN, "schedule", None)
    handed_back = HoursOverride(None, at, "ana", "cli")
    assert hours_now(hours, at, handed_back).why.value == "schedule"
