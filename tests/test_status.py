"""The status page and /metrics over a real SQLite journal and a real aiohttp server on
127.0.0.1: what the journal records is what ops see, escaped, never cached or framed."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from backline.app.cli import main as backline
from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.features.status.metrics import AGI_BUCKETS, Metrics
from backline.features.status.page import render_status
from backline.features.status.server import SECURITY_HEADERS, make_status_app
from backline.journal import AttemptKind, AuditEntry, Journal, Outcome, open_journal

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 02:00 in Chicago (CST)
NOW = T0 + timedelta(hours=3, minutes=12)
XSS = "<script>alert(1)</script>"
TZ = "America/Chicago"


@dataclass
class Site:
    http: aiohttp.ClientSession
    journal: Journal
    held: dict[str, int]
    metrics: Metrics
    db: Path


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    db = tmp_path / "journal.db"
    journal = open_journal(f"sqlite://{db}")
    held: dict[str, int] = {}
    metrics = Metrics(backlog=lambda: held)
    app = make_status_app(journal, metrics, "Maple & <Sons>", TZ, lambda: held, lambda: NOW)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
            yield Site(http, journal, held, metrics, db)
    finally:
        await runner.cleanup()
        journal.close()


async def get(site: Site, path: str) -> tuple[aiohttp.ClientResponse, str]:
    async with site.http.get(path) as response:
        return response, await response.text()


def engage(by: str = "ops & ana", reason: str = f"{XSS} carrier down") -> ModeChange:
    return ModeChange(Mode.OUTAGE, T0, by, Via.DESK_PHONE, reason)


END = ModeChange(Mode.NORMAL, T0 + timedelta(hours=2), "jo", Via.CLI, "")


async def test_status_page_shows_the_switches_the_journal_records(site: Site) -> None:
    response, page = await get(site, "/status")
    assert response.status == 200 and response.content_type == "text/html"
    assert 'class="mode normal">NORMAL<' in page
    assert "never been engaged" in page and "No switches recorded" in page

    site.journal.record_mode_change(engage(), expected=ModeState.initial())
    _, page = await get(site, "/status")
    assert 'class="mode engaged">OUTAGE ENGAGED<' in page
    assert "<dt>Since</dt><dd>2026-11-23 02:00:00 CST (for 3 h 12 min)</dd>" in page
    assert "<dt>By</dt><dd>ops &amp; ana</dd>" in page
    assert "<dt>Via</dt><dd>desk phone</dd>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; carrier down" in page
    assert "<script" not in page.lower()
    assert "Maple &amp; &lt;Sons&gt;" in page and "<Sons>" not in page

    site.journal.record_mode_change(END)
    _, page = await get(site, "/status")
    assert 'class="mode normal">NORMAL<' in page
    assert "<dt>By</dt><dd>jo</dd>" in page and "(no reason given)" in page
    assert re.findall(r'<td class="m">(\w+)</td>', page) == ["normal", "outage"]  # newest first
    assert "2026-11-23 04:00:00 CST" in page
    assert "<script" not in page.lower()


async def test_status_json_is_the_cli_shape_plus_the_backlog(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.journal.record_mode_change(engage(reason=XSS))
    site.held.update({"sms": 2, "email": 1})
    response, text = await get(site, "/status.json")
    assert response.status == 200 and response.content_type == "application/json"
    doc = json.loads(text)
    assert doc == {
        "mode": "outage", "engaged": True, "since": "2026-11-23T08:00:00+00:00",
        "by": "ops & ana", "via": "desk-phone", "reason": XSS,
        "history": [{"mode": "outage", "at": "2026-11-23T08:00:00+00:00", "by": "ops & ana",
                     "via": "desk-phone", "reason": XSS}],
        "backlog": {"call": 0, "sms": 2, "fax": 0, "email": 1},
        "refused_switches": [],
    }
    # Scripts written against `backline outage status --json` read this page unchanged.
    config = tmp_path / "practice.yaml"
    config.write_text((ROOT / "config" / "example.yaml").read_text().replace(
        "sqlite:///var/lib/backline/journal.db", f"sqlite://{site.db}"))
    capsys.readouterr()
    assert backline(["outage", "status", "--json", "--history", "20",
                     "--config", str(config)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["backlog"] == {"call": 0, "sms": 0, "fax": 0, "email": 0}  # the real journal
    del doc["backlog"], cli["backlog"]
    assert doc == cli


async def test_refused_desk_phone_switches_are_shown_plainly_on_the_page_and_the_cli(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What the controller audits when a desk phone's *28 / *26 is refused (desk_phone.py).
    site.journal.audit(AuditEntry(T0, "desk-phone:ana-desk", "outage.outage.refused",
                                  "wrong PIN"))
    site.journal.audit(AuditEntry(T0 + timedelta(minutes=1), "ops", "outage.outage",
                                  "engaged from the command line"))
    site.journal.audit(AuditEntry(T0 + timedelta(minutes=2), "desk-phone:sam<b>",
                                  "hours.closed.refused", "not an admin's desk phone"))
    _, page = await get(site, "/status")
    assert "<h2>Refused desk-phone switches</h2>" in page
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"</tr>", page.split("Refused desk-phone switches")[1])
    assert rows == [
        ("2026-11-23 02:02:00 CST", "sam&lt;b&gt;", "force the practice closed",
         "not an admin&#x27;s desk phone"),
        ("2026-11-23 02:00:00 CST", "ana-desk", "engage the outage", "wrong PIN")]
    assert "outage.outage.refused" not in page
    _, text = await get(site, "/status.json")
    assert json.loads(text)["refused_switches"] == [
        {"at": "2026-11-23T08:02:00+00:00", "desk_phone": "sam<b>",
         "action": "force the practice closed", "why": "not an admin's desk phone"},
        {"at": "2026-11-23T08:00:00+00:00", "desk_phone": "ana-desk",
         "action": "engage the outage", "why": "wrong PIN"}]
    config = tmp_path / "practice.yaml"
    config.write_text((ROOT / "config" / "example.yaml").read_text().replace(
        "sqlite:///var/lib/backline/journal.db", f"sqlite://{site.db}"))
    capsys.readouterr()
    assert backline(["outage", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "desk phone ana-desk asked to engage the outage: refused, wrong PIN" in out
    assert "desk phone sam<b> asked to force the practice closed: refused, not an admin's " \
        "desk phone" in out
    assert out.index("sam<b>") < out.index("ana-desk")  # newest first


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/status", 200),
    ("HEAD", "/status", 200),
    ("GET", "/status.json", 200),
    ("GET", "/metrics", 200),
    ("GET", "/", 404),
    ("GET", "/status/", 404),
    ("GET", "/secret<b>", 404),
    ("GET", "/static/../../etc/passwd", 404),
    ("POST", "/status", 405),
    ("DELETE", "/metrics", 405),
])
async def test_every_response_carries_the_security_headers(
        site: Site, method: str, path: str, status: int) -> None:
    async with site.http.request(method, path) as response:
        body = await response.text()
    assert response.status == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert "aiohttp" not in response.headers.get("Server", "").lower()
    if status == 404:
        assert body == "404 Not Found\n"  # nothing about the path comes back
    if status == 405:
        assert body == "405 Method Not Allowed\n" and "GET" in response.headers["Allow"]


async def test_the_csp_hash_allows_exactly_the_page_stylesheet(site: Site) -> None:
    response, page = await get(site, "/status")
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; ") and f"style-src 'sha256-{digest}';" in csp
    assert " style=" not in page  # attributes would need 'unsafe-hashes'
    assert not re.search(r"\b(src|href|action)=", page)  # nothing external, nothing to submit


async def test_an_unreadable_journal_is_a_bare_503_and_metrics_still_serve(site: Site) -> None:
    site.journal.close()
    for path in ("/status", "/status.json"):
        response, body = await get(site, path)
        assert response.status == 503 and body == "503 Service Unavailable\n"
        assert response.headers["Cache-Control"] == "no-store"
    response, _ = await get(site, "/metrics")
    assert response.status == 200


def samples(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(found: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels, found)
    return matches[0]


async def test_metrics_show_what_the_controller_reported(site: Site) -> None:
    m = site.metrics
    m.attempt(AttemptKind.CALL, Mode.OUTAGE, Outcome.ANNOUNCED)
    m.attempt(AttemptKind.CALL, Mode.OUTAGE, Outcome.ANNOUNCED)
    m.attempt(AttemptKind.SMS, Mode.NORMAL, Outcome.RECEIVED)
    m.mode_changed(Mode.OUTAGE, Via.DESK_PHONE)
    m.set_engaged(True)
    m.agi_latency("inbound", 0.0012)
    m.agi_latency("inbound", 0.03)
    m.link("node-a", True)
    m.link("node-b", False)
    response, text = await get(site, "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(text)

    attempts = found["backline_attempts"]
    assert value(attempts, "backline_attempts_total",
                 kind="call", mode="outage", outcome="announced") == 2
    assert value(attempts, "backline_attempts_total",
                 kind="sms", mode="normal", outcome="received") == 1
    # Known series start at zero, so the first increment is visible to rate().
    assert value(attempts, "backline_attempts_total",
                 kind="fax", mode="outage", outcome="rejected") == 0
    changes = found["backline_mode_changes"]
    assert value(changes, "backline_mode_changes_total", mode="outage", via="desk-phone") == 1
    assert value(changes, "backline_mode_changes_total", mode="normal", via="cli") == 0
    assert value(found["backline_outage_engaged"], "backline_outage_engaged") == 1
    links = found["backline_pbx_link_up"]
    assert value(links, "backline_pbx_link_up", pbx="node-a") == 1
    assert value(links, "backline_pbx_link_up", pbx="node-b") == 0

    agi = found["backline_agi_decision_seconds"]
    buckets = {float(s.labels["le"]): s.value for s in agi
               if s.name == "backline_agi_decision_seconds_bucket"}
    assert list(buckets) == [*AGI_BUCKETS, math.inf]
    assert min(buckets) == 0.0005 and max(b for b in buckets if b < math.inf) == 0.05
    assert buckets[0.001] == 0 and buckets[0.002] == 1 and buckets[0.02] == 1
    assert buckets[0.05] == 2 and buckets[math.inf] == 2
    assert value(agi, "backline_agi_decision_seconds_count", script="inbound") == 2
    assert value(agi, "backline_agi_decision_seconds_sum", script="inbound") == \
        pytest.approx(0.0312)

    m.set_engaged(False)
    m.link("node-a", False)
    _, text = await get(site, "/metrics")
    found = samples(text)
    assert value(found["backline_outage_engaged"], "backline_outage_engaged") == 0
    assert value(found["backline_pbx_link_up"], "backline_pbx_link_up", pbx="node-a") == 0


async def test_backlog_gauge_and_page_follow_the_callable(site: Site) -> None:
    async def backlog() -> dict[str, float]:
        _, text = await get(site, "/metrics")
        return {s.labels["kind"]: s.value for s in samples(text)["backline_delivery_backlog"]}

    assert await backlog() == {"call": 0, "sms": 0, "fax": 0, "email": 0}
    site.held.update({"fax": 3, "call": 1})
    assert await backlog() == {"call": 1, "sms": 0, "fax": 3, "email": 0}
    _, page = await get(site, "/status")
    assert '<tr><td>fax</td><td class="n held">3</td></tr>' in page
    assert '<tr><th>total</th><td class="n held">4</td></tr>' in page
    site.held.clear()
    site.held["email"] = 2
    assert await backlog() == {"call": 0, "sms": 0, "fax": 0, "email": 2}
    _, page = await get(site, "/status")
    assert '<tr><td>fax</td><td class="n">0</td></tr>' in page
    # Drained, the email row stays (at 0) on the page, in /status.json and in the metric.
    site.held.clear()
    assert await backlog() == {"call": 0, "sms": 0, "fax": 0, "email": 0}
    _, page = await get(site, "/status")
    assert '<tr><td>email</td><td class="n">0</td></tr>' in page
    _, text = await get(site, "/status.json")
    assert json.loads(text)["backlog"] == {"call": 0, "sms": 0, "fax": 0, "email": 0}


def test_each_metrics_has_its_own_registry_and_a_failing_backlog_spares_the_scrape() -> None:
    def broken() -> Mapping[str, int]:
        raise RuntimeError("journal locked")

    a, b = Metrics(backlog=broken), Metrics(backlog=lambda: {"sms": 5})
    a.set_engaged(True)
    found_a = samples(a.render().decode())
    found_b = samples(b.render().decode())
    assert value(found_a["backline_outage_engaged"], "backline_outage_engaged") == 1
    assert value(found_b["backline_outage_engaged"], "backline_outage_engaged") == 0
    assert found_a["backline_delivery_backlog"] == []
    assert value(found_b["backline_delivery_backlog"], "backline_delivery_backlog",
                 kind="sms") == 5


@pytest.mark.parametrize(("age", "shown"), [
    (timedelta(seconds=30), "just now"),
    (timedelta(minutes=4, seconds=59), "for 4 min"),
    (timedelta(hours=3, minutes=12), "for 3 h 12 min"),
    (timedelta(days=2, hours=3, minutes=5), "for 2 d 3 h"),
    (-timedelta(seconds=5), "just now"),  # our clock slightly behind the journal's
])
def test_the_page_says_how_long_the_mode_has_held(age: timedelta, shown: str) -> None:
    state = ModeState(Mode.OUTAGE, engage())
    page = render_status("Maple", state, [engage()], {}, T0 + age, TZ)
    assert f"<dd>2026-11-23 02:00:00 CST ({shown})</dd>" in page


def test_the_page_uses_the_practice_timezone() -> None:
    summer = ModeChange(Mode.OUTAGE, datetime(2026, 7, 1, 15, 30, tzinfo=UTC), "ana",
                        Via.CONSOLE, "fiber cut")
    page = render_status("Maple", ModeState(Mode.OUTAGE, summer), [summer], {},
                         summer.at, "America/Chicago")
    assert "2026-07-01 10:30:00 CDT" in page and "PBX console" in page
    page = render_status("Maple", ModeState(Mode.OUTAGE, summer), [summer], {},
                         summer.at, "Europe/Berlin")
    assert "2026-07-01 17:30:00 CEST" in page
