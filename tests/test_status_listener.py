"""/status, /status.json and /metrics say who engaged the outage, why, and the backlog: they
are served on a listener of their own (loopback by default), never on the public one that the
SMS provider and staff's alert links reach, and off loopback only behind a bearer token.

Against the controller's own apps on loopback ports (alert emails through aiosmtpd, the SMS
webhook signed by the Twilio stand-in) and `backline run` on the real Asterisk.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from backline.app import config
from backline.app.cli import main as backline
from backline.app.controller import Controller
from backline.features.status.server import SECURITY_HEADERS
from backline.journal import AttemptKind, open_journal
from tests.harness.alert_site import PRACTICE_NUMBER, AlertSite, Site, free_port
from tests.harness.backline_process import ControllerProcess
from tests.harness.practice_pbx import practice_pbx
from tests.test_alerts import EMAILS, link_in

STATUS_PAGES = ("/status", "/status.json", "/metrics")
TEXTER = "+17735550188"
TOKEN_ENV = "BACKLINE_TEST_STATUS_TOKEN"
ROOT = Path(__file__).resolve().parent.parent


async def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.text()


@pytest.fixture()
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with AlertSite(tmp_path) as s:
        yield s


async def test_the_public_listener_serves_the_webhook_and_links_but_not_the_status(
        site: Site) -> None:
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550100", PRACTICE_NUMBER)
    link = link_in((await site.sink.wait_for(EMAILS))[0])
    assert link.startswith(f"{site.base_url}/a/")

    for path in STATUS_PAGES:
        status, headers, body = await fetch(site.base_url + path)
        assert (status, body) == (404, "404 Not Found\n"), path
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name)
    # What must face the internet still does.
    delivered = await site.gateway.deliver(f"{site.base_url}/sms/inbound", TEXTER,
                                           PRACTICE_NUMBER, "Can I get my refill today?")
    assert delivered.status == 200
    status, _, page = await fetch(link)
    assert status == 200 and "+17205550100" in page

    # Ops read them on the status listener: the outage, its reason, the backlog (the SMS).
    status, _, text = await fetch(site.status_url + "/status.json")
    assert status == 200
    doc = json.loads(text)
    assert doc["mode"] == "outage" and doc["reason"] == "carrier down"
    assert doc["backlog"]["sms"] == 1
    status, _, page = await fetch(site.status_url + "/status")
    assert status == 200 and "OUTAGE ENGAGED" in page
    status, _, metrics = await fetch(site.status_url + "/metrics")
    assert status == 200 and "backline_outage_engaged 1.0" in metrics
    # ...and nothing of the public listener is there.
    status, _, _ = await fetch(site.status_url + link.removeprefix(site.base_url))
    assert status == 404


@pytest.mark.asterisk
async def test_backline_run_serves_the_status_only_on_its_listener_and_with_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    pages, ops = free_port(), free_port()
    extra = (f'  pages: {{listen: "127.0.0.1:{pages}", base_url: "http://127.0.0.1:{pages}"}}\n'
             f'  status: {{listen: "127.0.0.1:{ops}", token_env: {TOKEN_ENV}}}\n')
    async with practice_pbx(tmp_path, "status-run", controller_in_process=False,
                            connections_extra=extra) as pbx:
        controller = ControllerProcess(pbx)
        try:
            controller.wait_for(f"status page on http://127.0.0.1:{ops}/status", 60)
            for path in STATUS_PAGES:
                assert (await fetch(f"http://127.0.0.1:{pages}{path}"))[::2] == \
                    (404, "404 Not Found\n"), path
                assert (await fetch(f"http://127.0.0.1:{pages}{path}",
                                    Authorization=f"Bearer {token}"))[0] == 404, path
                for refused in ({}, {"Authorization": "Bearer " + token[:-1]},
                                {"Authorization": f"Basic {token}"},
                                {"Authorization": f"Bearer {token}x"}):
                    status, headers, body = await fetch(f"http://127.0.0.1:{ops}{path}",
                                                        **refused)
                    assert (status, body) == (401, "401 Unauthorized\n"), (path, refused)
                    assert headers["WWW-Authenticate"].startswith("Bearer")
                    assert headers["Cache-Control"] == "no-store"
                status, _, body = await fetch(f"http://127.0.0.1:{ops}{path}",
                                              Authorization=f"Bearer {token}")
                assert status == 200, path
            status, _, body = await fetch(f"http://127.0.0.1:{ops}/status.json",
                                          Authorization=f"Bearer {token}")
            assert json.loads(body)["mode"] == "normal"
            # Unknown paths on the status listener say nothing either without the token.
            assert (await fetch(f"http://127.0.0.1:{ops}/nothing"))[0] == 401
            assert (await fetch(f"http://127.0.0.1:{ops}/nothing",
                                Authorization=f"Bearer {token}"))[0] == 404
        finally:
            controller.stop()
        output = "".join(controller.lines)
        assert "ready" in output and token not in output


def write_config(tmp: Path, status: str) -> Path:
    text = (ROOT / "config" / "example.yaml").read_text()
    pages = '  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080"}\n'
    assert text.count(pages) == 1
    start = text.index(pages) + len(pages)
    # The example's own status line, and its comment, replaced by the case's.
    end = text.index("\n", text.index("  status:", start)) + 1
    path = tmp / "practice.yaml"
    path.write_text(text[:start] + status + text[end:])
    return path


@pytest.mark.parametrize(("status", "problem"), [
    ('  status: {listen: "0.0.0.0:8089"}\n',
     "connections.status.token_env: a bearer token (token_env or token_file) for a status "
     "listener off loopback (0.0.0.0)"),
    ('  status: {listen: "10.0.0.5:8089"}\n', "off loopback (10.0.0.5)"),
    ('  status: {listen: "status.maple.example:8089"}\n', "off loopback"),
    ('  status: {listen: "127.0.0.1:8080"}\n',
     "connections.status.listen: a HOST:PORT of its own: 127.0.0.1:8080 is "
     "connections.pages.listen"),
    ('  status: {listen: "127.0.0.1"}\n', "connections.status.listen: HOST:PORT"),
    # Plain HTTP off loopback: staff texts and their numbers would cross the network.
    ('  status: {listen: "0.0.0.0:8089", token_env: BACKLINE_STATUS_TOKEN}\n',
     "connections.status.listen: a loopback address, behind a TLS reverse proxy for other "
     "machines (cleartext only to this machine"),
])
def test_check_refuses_an_open_status_listener_off_loopback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], status: str, problem: str) -> None:
    path = write_config(tmp_path, status)
    line = 1 + path.read_text().splitlines().index(status.rstrip("\n"))
    capsys.readouterr()
    assert backline(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}: " in err and problem in err, err


@pytest.mark.parametrize(("status", "listen", "token"), [
    ('  status: {listen: "0.0.0.0:8089", token_env: BACKLINE_STATUS_TOKEN, '
     'insecure_cleartext: true}\n', "0.0.0.0:8089", "BACKLINE_STATUS_TOKEN"),
    ('  status: {listen: "[::1]:9100"}\n', "[::1]:9100", ""),
    ('  status: {listen: "localhost:9100"}\n', "localhost:9100", ""),
    ("", "127.0.0.1:8089", ""),  # absent: loopback, never the pages listener
])
def test_check_accepts_a_loopback_or_token_guarded_status_listener(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], status: str, listen: str,
        token: str) -> None:
    path = write_config(tmp_path, status)
    capsys.readouterr()
    assert backline(["check", str(path)]) == 0
    # Off loopback only as the operator's own, loudly reported, choice.
    insecure = "connections.status.insecure_cleartext: false: INSECURE: the bearer token, " \
               "staff texts"
    assert (insecure in capsys.readouterr().out) == ("insecure_cleartext" in status)
    directory = config.load(path).directory
    assert directory.connections.status is not None
    assert str(directory.connections.status.listen) == listen
    assert directory.connections.status.token.env == token


@pytest.mark.parametrize(("base_url", "verdict"), [
    # Links in emails open the alert and voicemail pages: never over plain HTTP to another
    # machine unless the operator says so, loudly.
    ('"http://backline.maple.example"', "refused"),
    ('"http://10.0.0.5:8080", insecure_cleartext: true', "INSECURE"),
    ('"https://backline.maple.example"', "ok"),
    ('"http://127.0.0.1:8080"', "ok"),
])
def test_check_refuses_cleartext_links_to_another_machine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], base_url: str,
        verdict: str) -> None:
    pages = '  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080"}\n'
    text = (ROOT / "config" / "example.yaml").read_text()
    path = tmp_path / "practice.yaml"
    path.write_text(text.replace(pages, f'  pages: {{listen: "127.0.0.1:8080", '
                                        f'base_url: {base_url}}}\n'))
    capsys.readouterr()
    assert backline(["check", str(path)]) == (2 if verdict == "refused" else 0)
    said = capsys.readouterr()
    assert ("connections.pages.base_url: an https:// URL (cleartext only to this machine"
            in said.err) == (verdict == "refused"), said
    assert ("connections.pages.insecure_cleartext: false: INSECURE: the links' tokens, the "
            "alert and voicemail pages" in said.out) == (verdict == "INSECURE"), said


async def test_a_token_configured_but_unset_refuses_every_request_and_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    path = write_config(tmp_path, f'  status: {{listen: "127.0.0.1:8089", '
                                  f'token_env: {TOKEN_ENV}}}\n')
    path.write_text(path.read_text().replace("sqlite:///var/lib/backline/journal.db",
                                             f"sqlite://{tmp_path}/journal.db"))
    directory = config.load(path).directory
    journal = open_journal(directory.connections.storage.url)
    controller = Controller(directory, journal)
    runner = web.AppRunner(controller.status_app(), access_log=None)
    try:
        warned = controller.warn_missing_secrets()
        assert f"the status listener is off: connections.status.token: the environment " \
               f"variable {TOKEN_ENV} is not set: every request for /status, /status.json " \
               "and /metrics gets 401" in warned
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        for path_ in STATUS_PAGES:
            for sent in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
                status, _, body = await fetch(f"http://{host}:{port}{path_}", **sent)
                assert (status, body) == (401, "401 Unauthorized\n"), (path_, sent)
    finally:
        await runner.cleanup()
        await controller.close()
        journal.close()
