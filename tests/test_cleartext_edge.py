"""Desk phones' and the carrier's SIP in the clear off this machine, the carrier's calls' audio
without SRTP, and desk phones registering with Kamailio off loopback: the real `backline
check` refuses each, naming the line, the field and the fix, unless ``insecure_cleartext:
true``; then check, the start and the status page (a real aiohttp server over a real SQLite
journal) say INSECURE.  Loopback-only configs (the example) are unaffected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from backline.app import config
from backline.core.wire import insecure
from backline.features.status.metrics import Metrics
from backline.features.status.server import make_status_app
from backline.journal import open_journal
from tests.test_config import EXAMPLE, check

LOOPBACK_SIP = "    sip: {host: 127.0.0.1, port: 5060}\n"


def practice(tmp: Path, pbx: str) -> Path:
    """The example config with its ``sip:`` line replaced by ``pbx`` (lines under pbx:)."""
    text = EXAMPLE.read_text()
    assert LOOPBACK_SIP in text
    path = tmp / "practice.yaml"
    path.write_text(text.replace(LOOPBACK_SIP, pbx, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


ON_LAN = "    sip: {host: 192.168.1.5, port: 5060}\n    lan: [192.168.1.0/24]\n"


def test_desk_phones_in_plain_sip_on_the_lan_are_refused_with_the_line_field_and_fix(
        tmp_path: Path) -> None:
    path = practice(tmp_path, ON_LAN)
    result = check(path)
    assert result.returncode == 2, result.stdout
    line = line_of(path, "sip: {host: 192.168.1.5")
    assert f"{path}:{line}: connections.pbx.encryption: required, with tls:" in result.stderr
    assert "set connections.pbx.insecure_cleartext: true" in result.stderr
    assert "ana-desk" in result.stderr and "INSECURE" not in result.stderr


def test_with_the_opt_out_check_accepts_and_says_insecure_naming_the_phones(
        tmp_path: Path) -> None:
    path = practice(tmp_path, ON_LAN + "    insecure_cleartext: true\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    line = line_of(path, "insecure_cleartext: true")
    out = result.stdout + result.stderr
    assert (f"{path}:{line}: warning: connections.pbx.insecure_cleartext: false: INSECURE: "
            "desk phones ana-desk") in out, out


def test_a_phone_left_optional_under_required_is_the_one_named(tmp_path: Path) -> None:
    text = ON_LAN + ("    tls: {practice_ca: /var/lib/backline/ca}\n"
                     "    encryption: required\n")
    path = practice(tmp_path, text)
    assert check(path).returncode == 0
    path.write_text(path.read_text().replace(
        "desk_phones: [ana-desk]", "desk_phones: [{name: ana-desk, encryption: optional}]", 1))
    result = check(path)
    assert result.returncode == 2, result.stdout
    assert "desk phones ana-desk: their SIP" in result.stderr, result.stderr


def test_a_carrier_without_tls_is_refused_unless_opted_out(tmp_path: Path) -> None:
    trunk = "    trunk: {host: 203.0.113.4, port: 5060}\n"
    path = practice(tmp_path, LOOPBACK_SIP + trunk)
    result = check(path)
    assert result.returncode == 2, result.stdout
    line = line_of(path, "trunk: {host: 203.0.113.4")
    assert f"{path}:{line}: connections.pbx.trunk.tls: true, with connections.pbx.tls" \
        in result.stderr
    assert "set connections.pbx.trunk.insecure_cleartext: true" in result.stderr
    path = practice(tmp_path, LOOPBACK_SIP + trunk.replace("}", ", insecure_cleartext: true}"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert (f"{line}: warning: connections.pbx.trunk.insecure_cleartext: false: INSECURE: "
            "calls to and from the carrier (203.0.113.4)") in result.stdout + result.stderr


def test_the_loopback_example_is_unaffected() -> None:
    result = check(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "INSECURE" not in result.stdout + result.stderr
    loaded = config.load(EXAMPLE).directory
    assert insecure(loaded.connections.pbx, loaded.users) == ()


async def test_the_status_page_and_json_say_what_is_in_the_clear(tmp_path: Path) -> None:
    path = practice(tmp_path, ON_LAN + "    insecure_cleartext: true\n"
                    "    trunk: {host: 203.0.113.4, port: 5060, insecure_cleartext: true}\n")
    doc, page = await status_of(tmp_path, path)
    phones, trunk = doc["insecure"]
    assert phones.startswith("INSECURE: desk phones ana-desk")
    assert "cross the LAN unencrypted (SIP on 192.168.1.5" in phones
    assert trunk.startswith("INSECURE: the carrier trunk (203.0.113.4)")
    assert "INSECURE: in the clear on the network" in page and "ana-desk" in page


async def status_of(tmp_path: Path, path: Path) -> tuple[dict[str, Any], str]:
    """``/status.json`` and ``/status`` of a real status server for the config at ``path``,
    told what is in the clear as the controller tells it."""
    directory = config.load(path).directory
    journal = open_journal(f"sqlite://{tmp_path / 'journal.db'}")
    held: dict[str, int] = {}
    app = make_status_app(journal, Metrics(backlog=lambda: held), "P", "UTC", lambda: held,
                          lambda: datetime.now(UTC),
                          insecure=lambda: insecure(directory.connections.pbx,
                                                    directory.users))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
            async with http.get("/status.json") as response:
                doc = json.loads(await response.text())
            async with http.get("/status") as response:
                page = await response.text()
    finally:
        await runner.cleanup()
        journal.close()
    return doc, page


def test_backline_run_says_insecure_at_start_and_refuses_without_the_opt_out(
        tmp_path: Path) -> None:
    """`backline run` loads the config first: with the opt-out the INSECURE line is printed
    before anything else happens (here it then stops: no AMI secret in its environment);
    without it nothing is started."""
    env = {k: v for k, v in os.environ.items() if k != "BACKLINE_AMI_SECRET"}
    path = practice(tmp_path, ON_LAN + "    insecure_cleartext: true\n")
    path.write_text(path.read_text().replace("sqlite:///var/lib/backline/journal.db",
                                             f"sqlite://{tmp_path / 'journal.db'}"))
    done = subprocess.run([sys.executable, "-m", "backline.app.cli", "run", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "connections.pbx.insecure_cleartext: false: INSECURE: desk phones ana-desk" \
        in done.stderr
    assert "BACKLINE_AMI_SECRET is not set" in done.stderr
    path.write_text(path.read_text().replace("    insecure_cleartext: true\n", "", 1))
    done = subprocess.run([sys.executable, "-m", "backline.app.cli", "run", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert "connections.pbx.encryption: required" in done.stderr
    assert "nothing was started" in done.stderr


PBX_TLS = "    tls: {practice_ca: /var/lib/backline/ca}\n"
TLS_TRUNK = "    trunk: {host: 203.0.113.4, port: 5061, tls: true}\n"


def test_a_carrier_over_tls_without_srtp_is_refused_naming_carrier_media_and_the_fix(
        tmp_path: Path) -> None:
    """TLS hides the carrier's SIP, not the calls' audio: without ``srtp`` the conversations
    cross the internet as plain RTP, so check asks for srtp or the opt-out."""
    path = practice(tmp_path, LOOPBACK_SIP + PBX_TLS + TLS_TRUNK)
    result = check(path)
    assert result.returncode == 2, result.stdout
    line = line_of(path, "trunk: {host: 203.0.113.4")
    assert (f"{path}:{line}: connections.pbx.trunk.srtp: true: carrier media: the calls' "
            "audio") in result.stderr, result.stderr
    assert "set connections.pbx.trunk.srtp: true" in result.stderr
    assert "set connections.pbx.trunk.insecure_cleartext: true" in result.stderr
    assert "INSECURE" not in result.stdout + result.stderr
    # With SRTP the audio is encrypted too: accepted, nothing INSECURE.
    path = practice(tmp_path, LOOPBACK_SIP + PBX_TLS + TLS_TRUNK.replace("}", ", srtp: true}"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "INSECURE" not in result.stdout + result.stderr


async def test_with_the_opt_out_carrier_media_is_insecure_at_check_and_on_the_status_page(
        tmp_path: Path) -> None:
    path = practice(tmp_path, LOOPBACK_SIP + PBX_TLS
                    + TLS_TRUNK.replace("}", ", insecure_cleartext: true}"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    line = line_of(path, "trunk: {host: 203.0.113.4")
    assert (f"{path}:{line}: warning: connections.pbx.trunk.insecure_cleartext: false: "
            "INSECURE: carrier media: the calls' audio (the conversations) to and from the "
            "carrier (203.0.113.4) crosses the internet as plain RTP") \
        in result.stdout + result.stderr
    doc, page = await status_of(tmp_path, path)
    assert doc["insecure"] == [
        "INSECURE: carrier media: the calls' audio to and from the carrier (203.0.113.4) "
        "crosses the internet as plain RTP, its SIP over TLS but no trunk.srtp "
        "(connections.pbx.trunk.insecure_cleartext)"]
    assert "INSECURE: carrier media" in page


def test_backline_run_says_carrier_media_is_insecure_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BACKLINE_AMI_SECRET"}
    path = practice(tmp_path, LOOPBACK_SIP + PBX_TLS
                    + TLS_TRUNK.replace("}", ", insecure_cleartext: true}"))
    path.write_text(path.read_text().replace("sqlite:///var/lib/backline/journal.db",
                                             f"sqlite://{tmp_path / 'journal.db'}"))
    done = subprocess.run([sys.executable, "-m", "backline.app.cli", "run", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert ("connections.pbx.trunk.insecure_cleartext: false: INSECURE: carrier media"
            in done.stderr), done.stderr
    assert "BACKLINE_AMI_SECRET is not set" in done.stderr


SHARED = "postgresql://backline@db.maple.example:5432/backline"
BEHIND_KAMAILIO = "    node: node1\n    registrar: {host: 10.0.0.10, port: 5070}\n"


def behind_kamailio(tmp: Path, pbx: str) -> Path:
    """The example practice on loopback SIP, its phones registering with Kamailio (and the
    shared PostgreSQL journal it needs); ``pbx``: more lines under pbx:."""
    path = practice(tmp, LOOPBACK_SIP + BEHIND_KAMAILIO + pbx)
    path.write_text(path.read_text().replace("sqlite:///var/lib/backline/journal.db", SHARED))
    return path


def test_desk_phones_registering_with_kamailio_off_loopback_are_refused_with_the_fix(
        tmp_path: Path) -> None:
    """The node's SIP on loopback hid it: the phones' SIP goes to Kamailio's listeners on
    the LAN, and behind it their audio is never SRTP."""
    path = behind_kamailio(tmp_path, "")
    result = check(path)
    assert result.returncode == 2, result.stdout
    line = line_of(path, "registrar: {host: 10.0.0.10")
    assert f"{path}:{line}: connections.pbx.registrar: Kamailio on this machine's loopback" \
        in result.stderr, result.stderr
    assert "desk phones ana-desk" in result.stderr
    assert "(SIP to the registrar on 10.0.0.10:5070)" in result.stderr
    assert "set connections.pbx.insecure_cleartext: true" in result.stderr
    # With TLS too: the phones' audio is still plain behind Kamailio.
    assert check(behind_kamailio(tmp_path, PBX_TLS)).returncode == 2
    # Kamailio on loopback (one machine) is not refused.
    path.write_text(path.read_text().replace("10.0.0.10", "127.0.0.1"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "INSECURE" not in result.stdout + result.stderr


async def test_with_the_opt_out_kamailio_phones_are_insecure_at_check_and_on_the_status_page(
        tmp_path: Path) -> None:
    path = behind_kamailio(tmp_path, "    insecure_cleartext: true\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    line = line_of(path, "insecure_cleartext: true")
    assert (f"{path}:{line}: warning: connections.pbx.insecure_cleartext: false: INSECURE: "
            "desk phones ana-desk") in result.stdout + result.stderr
    doc, page = await status_of(tmp_path, path)
    [phones] = doc["insecure"]
    assert phones.startswith("INSECURE: desk phones ana-desk")
    assert "(SIP to the registrar on 10.0.0.10:5070;" in phones
    assert "ana-desk" in page


def test_render_refuses_kamailio_listening_off_loopback_without_the_opt_out(
        tmp_path: Path) -> None:
    """The listeners are where ``--kamailio`` says: the config's registrar on loopback does
    not let a render put them on the LAN in the clear."""
    path = behind_kamailio(tmp_path, "")
    path.write_text(path.read_text().replace("10.0.0.10", "127.0.0.1"))
    env = {**os.environ, "BACKLINE_AMI_SECRET": "test-ami-secret"}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "backline.app.cli", "render", str(path), "--out", str(out),
         "--secrets", str(tmp_path / "secrets.json"), "--kamailio", "192.168.1.10:5070",
         "--node", "node1=10.0.0.11:5060"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stdout
    assert "--kamailio 192.168.1.10:5070: desk phones ana-desk" in done.stderr, done.stderr
    assert "set connections.pbx.insecure_cleartext: true" in done.stderr
    assert not (out / "kamailio").exists()
