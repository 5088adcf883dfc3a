"""Kamailio as the desk phones' registrar for two Asterisk nodes (normal mode on several nodes).

Real peers: two Asterisk nodes with their controllers, one Kamailio rendered by
backline/render/kamailio.py with the location table in a real PostgreSQL, SIPp phones and a
SIPp carrier.  The phones register with Kamailio only; every carrier call, whichever node
Kamailio hands it to, rings every member's phones; the login limit holds the same on the
registrar and in both controllers; with one node SIGKILLed the next calls still ring every
member; a restarted Kamailio still holds every registration.  A live reload reaches the ring
set the registrar's table makes: a user deactivated leaves it at once, and reactivated rings
again without their phone registering again.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from backline.app.serve import asterisk_reloader
from backline.core.connections import HostPort
from backline.render.kamailio import LOCATION_SQL, Node, Registrar, location_db_url
from tests.harness.kamailio import Kamailio, KamailioMissing, free_sip_port, kamailio_binary
from tests.harness.postgres import PostgresServer
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, SippProcess, desk_phone, place_calls

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(400)]

DIRECT = "+13125550101"  # Dr. Ana Lee's line: ana, and the nurses (mia; pat is deactivated)


def dialled(p: PracticePbx) -> list[str]:
    """Desk-phone endpoints this node dialled (``PJSIP/mia-desk-0000002a`` → ``mia-desk``)."""
    return [e["DestChannel"].removeprefix("PJSIP/").rsplit("-", 1)[0]
            for e in p.events.named("DialBegin")]


async def call_rings_both(proxy: tuple[str, int], tmp: Path, ana: SippProcess,
                          mia: SippProcess, n: int) -> None:
    """The carrier's n-th call: answered (Ana's phone picks up) after ringing both phones."""
    call = place_calls(proxy, tmp, DIRECT, from_user="carrier", timeout=30)
    result = await asyncio.to_thread(call.wait, 60)
    assert result.ok and result.successful == 1, call.describe()
    for phone in (ana, mia):
        await asyncio.to_thread(phone.wait_for_invites, n, 30)


async def test_kamailio_registrar_rings_every_member_on_either_node(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    try:
        kamailio_binary()
    except KamailioMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    url = postgres_server.new_database("registrar")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LOCATION_SQL)
    listen = HostPort("127.0.0.1", free_sip_port())
    proxy = (listen.host, listen.port)
    behind = f"    registrar: {{host: {listen.host}, port: {listen.port}}}\n"
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    async with practice_pbx(tmp_path / "a", "reg-a", ring_seconds=10, node="node-a",
                            storage_url=url, pbx_extra=behind) as a:
        # One render for all nodes: both share the desk-phone secrets, as Kamailio does.
        shutil.copy(tmp_path / "a" / "secrets.json", tmp_path / "b" / "secrets.json")
        async with practice_pbx(tmp_path / "b", "reg-b", ring_seconds=10, node="node-b",
                                storage_url=url, pbx_extra=behind) as b:
            assert a.secrets == b.secrets
            logins = {phone: u.id for u in a.directory.users if u.active
                      for phone in u.desk_phones}
            nodes = [Node("node-a", HostPort("127.0.0.1", a.ports.sip)),
                     Node("node-b", HostPort("127.0.0.1", b.ports.sip))]
            registrar = Registrar(location_db_url(url), str(tmp_path / "kamailio"),
                                  a.directory.max_per_login)

            def kamailio() -> Kamailio:
                return Kamailio(tmp_path / "kamailio", listen, nodes, registrar=registrar,
                                logins=logins, secrets=a.secrets)

            kam = kamailio()
            await asyncio.to_thread(kam.start)
            phones: list[SippProcess] = []
            try:
                ana = await asyncio.to_thread(desk_phone, proxy, tmp_path, "ana-desk",
                                              a.secret("ana-desk"),
                                              DeskPhoneMode.ANSWER_AND_HANG_UP, talk_ms=200,
                                              aor="ana", pickup_ms=1000)
                phones.append(ana)
                mia = await asyncio.to_thread(desk_phone, proxy, tmp_path, "mia-desk",
                                              a.secret("mia-desk"), DeskPhoneMode.RING,
                                              aor="mia")
                phones.append(mia)
                # Sam's login holds 2: the third phone pushes out the one expiring soonest.
                for phone, expires in (("sam-desk", 600), ("sam-exam", 3600),
                                       ("sam-lab", 3600)):
                    uas = await asyncio.to_thread(desk_phone, proxy, tmp_path, phone,
                                                  a.secret(phone), DeskPhoneMode.RING,
                                                  aor="sam", expires=expires)
                    phones.append(uas)
                for p in (a, b):  # neither node holds a registration: both read Kamailio's
                    await p.driver.wait_registrations(
                        lambda r: r.live("sam") == ("sam-exam", "sam-lab")
                        and bool(r.live("ana")) and bool(r.live("mia")), within=30)
                    held = p.instance.cli("pjsip show contacts")
                    assert not re.search(r"Contact:\s+(ana|mia|sam)/", held), held

                # `backline doctor` on a node counts the registrar's registrations.
                doctor = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "backline.app.cli", "doctor",
                                     str(b.config_path)], capture_output=True, text=True,
                    timeout=60, check=False)
                phones_line = next(line for line in doctor.stdout.splitlines()
                                   if "desk phones" in line)
                assert "4 of 7 registered; not: jo-desk, raj-desk, sam-desk;" in phones_line, \
                    doctor.stdout + doctor.stderr

                # 20 carrier calls, round robin over the nodes: each rings both members.
                for n in range(1, 21):
                    await call_rings_both(proxy, tmp_path, ana, mia, n)
                spread = {"node-a": Counter(dialled(a)), "node-b": Counter(dialled(b))}
                for counts in spread.values():
                    # Both nodes took calls, and each call rang both phones (and nobody else).
                    assert set(counts) == {"ana-desk", "mia-desk"}, spread
                    assert counts["ana-desk"] == counts["mia-desk"], spread
                assert sum(c["mia-desk"] for c in spread.values()) == 20, spread
                # Each reached the phone through Kamailio (its Record-Route), not directly.
                routes = {m.header("Record-Route") for m in mia.invites()}
                assert all(r and f"127.0.0.1:{listen.port}" in r for r in routes), routes

                # Node a dies mid-day: the next calls still ring every member (on node b).
                a.instance.kill()
                for n in range(21, 25):
                    await call_rings_both(proxy, tmp_path, ana, mia, n)

                # Kamailio restarted: the registrations are in PostgreSQL, not in its memory.
                kam.stop()
                kam = kamailio()
                await asyncio.to_thread(kam.start)
                await call_rings_both(proxy, tmp_path, ana, mia, 25)
                # Kamailio itself still knows Ana's phone: its call goes out through a node
                # (which authenticates it) and rings Mia's phone through Kamailio.
                out = place_calls(proxy, tmp_path, "121", from_user="ana",
                                  password=a.secret("ana-desk"), auth_user="ana-desk",
                                  timeout=30)
                try:
                    await asyncio.to_thread(mia.wait_for_invites, 26, 30)
                finally:
                    out.kill()
            finally:
                for proc in phones:
                    proc.kill()
                kam.stop()


MIA = 'extension: "121",\n     desk_phones: [mia-desk]'
MIA_DEACTIVATED = 'extension: "121", active: false,\n     desk_phones: [mia-desk]'


async def test_a_reload_reaches_the_ring_set_the_registrar_keeps(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    try:
        kamailio_binary()
    except KamailioMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    url = postgres_server.new_database("registrar_reload")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LOCATION_SQL)
    listen = HostPort("127.0.0.1", free_sip_port())
    proxy = (listen.host, listen.port)
    behind = f"    registrar: {{host: {listen.host}, port: {listen.port}}}\n"
    async with practice_pbx(tmp_path, "reg-reload", ring_seconds=10, node="node-a",
                            storage_url=url, pbx_extra=behind) as p:
        logins = {phone: u.id for u in p.directory.users if u.active
                  for phone in u.desk_phones}
        kam = Kamailio(tmp_path / "kamailio", listen,
                       [Node("node-a", HostPort("127.0.0.1", p.ports.sip))],
                       registrar=Registrar(location_db_url(url), str(tmp_path / "kamailio"),
                                           p.directory.max_per_login),
                       logins=logins, secrets=p.secrets)
        await asyncio.to_thread(kam.start)
        phones: list[SippProcess] = []
        try:
            ana = await asyncio.to_thread(desk_phone, proxy, tmp_path, "ana-desk",
                                          p.secret("ana-desk"),
                                          DeskPhoneMode.ANSWER_AND_HANG_UP, talk_ms=200,
                                          aor="ana", pickup_ms=1000)
            phones.append(ana)
            mia = await asyncio.to_thread(desk_phone, proxy, tmp_path, "mia-desk",
                                          p.secret("mia-desk"), DeskPhoneMode.RING, aor="mia")
            phones.append(mia)
            await p.driver.wait_registrations(
                lambda r: bool(r.live("ana")) and bool(r.live("mia")), within=30)
            reloader = asterisk_reloader(p.controller, p.driver, p.instance)
            text = p.config_path.read_text()
            assert MIA in text

            # Mia deactivated: her registration, still in the registrar's table (which the
            # YAML does not change, so no notice comes), leaves the ring set at once.
            p.config_path.write_text(text.replace(MIA, MIA_DEACTIVATED))
            assert (await reloader.reload()).applied
            await p.driver.wait_registrations(
                lambda r: not r.live("mia") and bool(r.live("ana")), within=30)

            # Reactivated: her phone rings again, with no REGISTER of its own in between.
            registers = len([m for m in mia.messages() if m.method == "REGISTER"])
            p.config_path.write_text(text)
            assert (await reloader.reload()).applied
            await p.driver.wait_registrations(lambda r: r.live("mia") == ("mia-desk",),
                                              within=30)
            await call_rings_both(proxy, tmp_path, ana, mia, 1)
            assert len([m for m in mia.messages() if m.method == "REGISTER"]) == registers
        finally:
            for proc in phones:
                proc.kill()
            kam.stop()
