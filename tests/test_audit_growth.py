"""The audit log cannot be grown without bound from the internet (issue 18, item 8).

Forged SMS posts and guessed link tokens used to write one fsynced audit row each, about
2,000 a second from one client, kept forever.  Against the controller's own public app (the
Twilio stand-in, aiosmtpd for alerts, real SQLite) at a clock the test moves: the first
refusal of a source in a minute is audited in full, the rest counted per source and minute,
a source past its limit is answered 429, signed messages and real links still go through,
and audit entries older than ``connections.storage.audit_years`` (six) are pruned.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from backline.app.cli import main as backline
from backline.core.records import AttemptKind, AuditEntry
from backline.core.refusals import DEFAULT_PER_MINUTE, RefusalCount, minute_of
from backline.features.audit_upkeep import AuditUpkeep, years_before
from tests.harness.alert_site import PRACTICE_NUMBER, AlertSite, Site
from tests.test_alerts import EMAILS, link_in

ROOT = Path(__file__).resolve().parent.parent
FLOOD = 300
PATIENT = "+17205550141"


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with AlertSite(tmp_path) as s:
        yield s


async def post_forged(http: aiohttp.ClientSession, url: str) -> int:
    async with http.post(url, data={"From": PATIENT, "To": PRACTICE_NUMBER, "Body": "x"},
                         headers={"X-Twilio-Signature": "Zm9yZ2Vk"}) as response:
        return response.status


def from_address(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (another source on loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_a_flood_of_forged_sms_is_counted_per_source_and_minute_not_audited_each(
        site: Site) -> None:
    assert site.controller is not None and site.journal is not None
    webhook = f"{site.base_url}/sms/inbound"
    start = site.clock()
    async with aiohttp.ClientSession() as http:
        statuses = [await post_forged(http, webhook) for _ in range(FLOOD)]
    assert statuses == [403] * DEFAULT_PER_MINUTE + [429] * (FLOOD - DEFAULT_PER_MINUTE)
    # One audit entry for the flood: the first, in full.
    refused = [e for e in site.journal.audit_log(limit=1000) if e.action == "sms.refused"]
    assert len(refused) == 1 and refused[0].actor == "sms-webhook:127.0.0.1"
    # Another source is not held back by this one, and a signed message always goes through.
    async with from_address("127.0.0.2") as other:
        assert await post_forged(other, webhook) == 403
    signed = await site.gateway.deliver(webhook, PATIENT, PRACTICE_NUMBER, "refill please")
    assert signed.status == 200
    assert [a.text for a in site.journal.attempts() if a.kind is AttemptKind.SMS] == [
        "refill please"]
    # The minute over, its counts are written: one row per source.
    site.clock.advance(60)
    await site.controller.audit_upkeep.round()
    assert site.journal.refusal_counts(since=start) == [
        RefusalCount(minute_of(start), "127.0.0.1", "sms.refused", FLOOD),
        RefusalCount(minute_of(start), "127.0.0.2", "sms.refused", 1)]
    # A new minute, a new allowance.
    async with aiohttp.ClientSession() as http:
        assert await post_forged(http, webhook) == 403


async def test_guessed_link_tokens_are_counted_and_then_refused_before_the_journal(
        site: Site) -> None:
    assert site.controller is not None and site.journal is not None
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550100", PRACTICE_NUMBER)
    link = link_in((await site.sink.wait_for(EMAILS))[0])
    start = site.clock()
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(DEFAULT_PER_MINUTE + 40):
            async with http.get(f"{site.base_url}/a/{secrets.token_urlsafe(32)}") as r:
                statuses.append(r.status)
        assert statuses == [404] * DEFAULT_PER_MINUTE + [429] * 40
        async with http.get(link) as r:  # this source is past its limit, whatever it asks
            assert r.status == 429
    async with from_address("127.0.0.3") as staff, staff.get(link) as r:
        assert r.status == 200 and "+17205550100" in await r.text()
    entries = site.journal.audit_log(limit=1000)
    assert [e.actor for e in entries if e.action == "link.view.refused"] == ["link:-"]
    assert len([e for e in entries if e.action == "link.view"]) == 1  # the staff's view
    site.clock.advance(60)
    await site.controller.audit_upkeep.round()
    # The guesses and the real link asked for past the limit: all refused, all counted.
    assert site.journal.refusal_counts(since=start) == [
        RefusalCount(minute_of(start), "127.0.0.1", "link.view.refused", DEFAULT_PER_MINUTE + 41)]


async def test_an_expired_link_asked_for_again_and_again_is_audited_once_a_minute(
        site: Site) -> None:
    """A client asking for an expired alert link over and over: each answered 404 (up to the
    limit), one audit row for the minute and the rest counted, not a row each."""
    assert site.controller is not None and site.journal is not None
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550100", PRACTICE_NUMBER)
    link = link_in((await site.sink.wait_for(EMAILS))[0])
    site.clock.advance(12 * 3600 + 1)
    start = site.clock()
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(DEFAULT_PER_MINUTE):
            async with http.get(link) as r:
                statuses.append(r.status)
        assert statuses == [404] * DEFAULT_PER_MINUTE
    refused = [e for e in site.journal.audit_log(limit=1000) if e.action == "link.view.refused"]
    assert len(refused) == 1 and refused[0].detail.startswith("expired")
    site.clock.advance(60)
    await site.controller.audit_upkeep.round()
    assert site.journal.refusal_counts(since=start) == [
        RefusalCount(minute_of(start), "127.0.0.1", "link.view.expired", DEFAULT_PER_MINUTE)]


async def test_audit_entries_are_kept_six_years_and_then_pruned(site: Site) -> None:
    assert site.controller is not None and site.journal is not None
    journal = site.journal
    # The controller prunes when it starts (a task of its own): done before the rows go in.
    await asyncio.wait_for(site.controller.audit_upkeep.pruned.wait(), 30)
    now = site.clock()
    six_years = years_before(now, 6)
    for at, what in ((six_years - timedelta(days=1), "too old"),
                     (six_years + timedelta(days=1), "kept"),
                     (now - timedelta(days=30), "recent")):
        journal.audit(AuditEntry(at, "link:1", "link.view", what))
    journal.record_refusals([RefusalCount(minute_of(six_years - timedelta(days=2)), "10.0.0.9",
                                          "sms.refused", 7),
                             RefusalCount(minute_of(now - timedelta(days=2)), "10.0.0.9",
                                          "sms.refused", 5)])
    # The controller pruned when it started; the next prune is a day later by its clock.
    await site.controller.audit_upkeep.round()
    assert "too old" in [e.detail for e in journal.audit_log(limit=100)]
    site.clock.advance(24 * 3600)
    await site.controller.audit_upkeep.round()
    kept = [e.detail for e in journal.audit_log(limit=100) if e.action == "link.view"]
    assert sorted(kept) == ["kept", "recent"]
    assert [c.count for c in journal.refusal_counts(since=six_years - timedelta(days=10))] == [5]
    # The period is the config's: a year keeps only the recent one.
    upkeep = AuditUpkeep(journal, site.controller.audit_upkeep.tally, site.clock, 1)
    await upkeep.round()
    assert [e.detail for e in journal.audit_log(limit=100) if e.action == "link.view"] == [
        "recent"]


@pytest.mark.parametrize(("storage", "problem"), [
    ('  storage: {url: "sqlite:///var/lib/backline/journal.db", audit_years: 0}',
     "connections.storage.audit_years: a whole number from 1 to 100"),
    ('  storage: {url: "sqlite:///var/lib/backline/journal.db", audit_years: six}',
     "connections.storage.audit_years: a whole number from 1 to 100"),
])
def test_check_names_a_bad_retention(tmp_path: Path, storage: str, problem: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "config" / "example.yaml").read_text()
    anchor = '  storage: {url: "sqlite:///var/lib/backline/journal.db"}'
    assert text.count(anchor) == 1
    text = text.replace(anchor, storage)
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    number = 1 + text.splitlines().index(storage)
    capsys.readouterr()
    assert backline(["check", str(path)]) == 2
    assert f"{path}:{number}: {problem}" in capsys.readouterr().err


def test_check_names_a_bad_refusal_limit(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "config" / "example.yaml").read_text()
    anchor = '  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080"}'
    line = anchor[:-1] + ", refusals_per_minute: 0}"
    text = text.replace(anchor, line)
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    number = 1 + text.splitlines().index(line)
    capsys.readouterr()
    assert backline(["check", str(path)]) == 2
    assert (f"{path}:{number}: connections.pages.refusals_per_minute: a whole number from 1 "
            "to 100000") in capsys.readouterr().err
