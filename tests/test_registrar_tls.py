"""Kamailio as the desk phones' registrar, over TLS (``connections.pbx.tls`` with a practice
CA), on separate addresses (tests/harness/netns.py): Kamailio and a real Asterisk node with
its controller on the PBX host, the location table in a real PostgreSQL there, baresip as the
desk phone on the LAN, a SIPp carrier on the WAN, tshark on the LAN."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from backline.core.connections import AsteriskPbx, HostPort
from backline.localpbx.output import registrar_tls
from backline.render.kamailio import LOCATION_SQL, Node, Registrar, location_db_url
from tests.harness.baresip import Account, start_baresip, write_wav
from tests.harness.kamailio import Kamailio, KamailioMissing, kamailio_binary
from tests.harness.netns import Topology, ip
from tests.harness.postgres import running_server
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import Host, place_calls
from tests.test_registrar import DIRECT, dialled
from tests.test_tls_phones import capture, frames_with

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(400),
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

PATIENT = "+17205550141"
KAMAILIO_SIP, KAMAILIO_TLS = 5070, 5061
KAMAILIO_HOST = 2  # Kamailio's address on the LAN, beside the node's (.1): its own host


def test_behind_kamailio_a_desk_phone_registers_over_tls_and_rings_with_no_clear_sip_on_the_lan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On separate addresses (tests/harness/netns.py): baresip on the LAN registers with
    Kamailio over TLS, trusting only the practice CA; a carrier call from the WAN reaches the
    node through Kamailio and rings it through Kamailio, over the same TLS connection; the
    phone answers and hangs up; two phones of one login refresh their registrations over
    TLS without pushing each other out.  The LAN's capture holds no SIP outside TLS."""
    try:
        kamailio_binary()
    except KamailioMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", [0] * 8000)
    with Topology() as net:
        kam_host = net.addresses.lan(KAMAILIO_HOST)
        ip("-n", net.pbx.name, "addr", "add", f"{kam_host}/24", "dev", "lan0")
        ip("-n", net.wan.name, "route", "add", f"{kam_host}/32", "via", net.pbx_wan)
        listen = HostPort(kam_host, KAMAILIO_SIP)

        async def body() -> None:
            # PostgreSQL in the PBX's namespace, where Kamailio and the controller reach it.
            with running_server() as db:
                monkeypatch.setenv("PGPASSFILE", str(db.passfile))
                url = await asyncio.to_thread(db.new_database, "registrar_tls")
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(LOCATION_SQL)
                behind = (f"    registrar: {{host: {kam_host}, port: {KAMAILIO_SIP}}}\n"
                          f"    tls: {{port: {KAMAILIO_TLS}, practice_ca: {ca}}}\n")
                async with practice_pbx(tmp_path, "reg-tls", node="node-a", storage_url=url,
                                        carrier_from_user=False, sip_host=net.pbx_lan,
                                        trunk_host=net.carrier, trunk_port=5060,
                                        pbx_extra=behind) as p, \
                        capture(net.lan, tmp_path / "lan.pcap"):
                    await through_kamailio(net, p, listen, tmp_path, ca, says)

        net.pbx.run(body)

        lan = tmp_path / "lan.pcap"
        assert frames_with(lan, 'frame contains "SIP/2.0"') == 0
        assert frames_with(lan, "sip") == 0
        assert frames_with(lan, f"tls.handshake.type == 1 && ip.dst == {kam_host} "
                                f"&& tcp.dstport == {KAMAILIO_TLS}") >= 1
        assert frames_with(lan, f"ip.dst == {net.pbx_lan} && tcp") == 0  # not the node


async def through_kamailio(net: Topology, p: PracticePbx, listen: HostPort, tmp: Path,
                           ca: Path, says: Path) -> None:
    pbx = p.directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    logins = {phone: u.id for u in p.directory.users if u.active for phone in u.desk_phones}
    registrar = Registrar(location_db_url(p.directory.connections.storage.url),
                          str(tmp / "kamailio"), p.directory.max_per_login,
                          registrar_tls(p.directory, pbx, listen))
    kam = Kamailio(tmp / "kamailio", listen, [Node("node-a", HostPort(net.pbx_lan, p.ports.sip))],
                   carrier=net.carrier, registrar=registrar, logins=logins, secrets=p.secrets)
    await asyncio.to_thread(kam.start)
    phone = None
    try:
        # A phone that trusts only the practice CA finds Kamailio's certificate signed by it,
        # for Kamailio's address (baresip 1.0 does not check; openssl does).
        trusted = await asyncio.to_thread(
            subprocess.run, net.lan.argv(
                "openssl", "s_client", "-brief", "-connect", f"{listen.host}:{KAMAILIO_TLS}",
                "-CAfile", str(ca / "ca.pem"), "-verify_return_error", "-verify_ip",
                listen.host), input="", capture_output=True, text=True, timeout=30,
            check=False)
        assert trusted.returncode == 0 and "Verification: OK" in trusted.stderr, \
            trusted.stderr
        ana = Account("ana", "ana-desk", p.secret("ana-desk"),
                      f"{listen.host}:{KAMAILIO_TLS}", srtp=False)
        phone = await start_baresip(net.lan, tmp / "ana", address=net.phone(0),
                                    ca=ca / "ca.pem", says=says, accounts=[ana])
        await phone.wait_registered(ana)
        await p.driver.wait_registrations(lambda r: bool(r.live("ana")), within=30)
        held = p.instance.cli("pjsip show contacts")
        assert not re.search(r"Contact:\s+ana/", held), held  # Kamailio holds it, not the node
        with psycopg.connect(p.directory.connections.storage.url) as conn:
            rows = conn.execute("SELECT contact, socket FROM location").fetchall()
        assert [socket for _, socket in rows] == [f"tls:{listen.host}:{KAMAILIO_TLS}"], rows

        # A patient calls Dr. Lee's line from the telephone network: the carrier's INVITE
        # goes to Kamailio, the node rings her phone through Kamailio, over TLS.
        call = place_calls((listen.host, listen.port), tmp, DIRECT, from_user=PATIENT,
                           timeout=30, host=Host(net.carrier, net.wan.name))
        try:
            incoming = await phone.wait_event("CALL_INCOMING", within=30)
            assert str(incoming.get("peeruri", "")).startswith("sip:"), incoming
            await phone.command("accept")
            await phone.wait_event("CALL_ESTABLISHED")
            await phone.command("hangup")
            await phone.wait_event("CALL_CLOSED")
            result = await asyncio.to_thread(call.wait, 30)
            assert result.ok and result.successful == 1, call.describe()
        finally:
            call.kill()
        (dialled_phone,) = dialled(p)
        assert dialled_phone == "ana-desk"

        # Sam's login holds 2; two of his phones on TLS refresh their registrations: a
        # refresh is the same contact (with its connection's alias), so it neither pushes
        # the other phone out nor is removed and added again.
        sam = [Account("sam", desk, p.secret(desk), f"{listen.host}:{KAMAILIO_TLS}",
                       srtp=False, regint=4) for desk in ("sam-desk", "sam-exam")]
        sams = await start_baresip(net.lan, tmp / "sam", address=net.phone(1),
                                   ca=ca / "ca.pem", says=says, accounts=sam)
        try:
            await sams.wait_registered(sam[0], times=2)
            kept = await asyncio.to_thread(sams_registrations, p)
            assert sorted(kept.values()) == ["sam-desk", "sam-exam"], kept
            refreshed = sum(e.get("type") == "REGISTER_OK" for e in sams.events)
            await sams.wait_events("REGISTER_OK", refreshed + 4, within=30)  # each twice
            assert await asyncio.to_thread(sams_registrations, p) == kept
        finally:
            await sams.stop()
    finally:
        if phone is not None:
            await phone.stop()
        await asyncio.to_thread(kam.stop)


def sams_registrations(p: PracticePbx) -> dict[str, str]:
    """Sam's registrations in Kamailio's location table: ruid -> the desk phone."""
    with psycopg.connect(p.directory.connections.storage.url) as conn:
        rows = conn.execute(
            "SELECT l.ruid, a.avalue FROM location l JOIN location_attrs a ON a.ruid = l.ruid "
            "AND a.aname = 'phone' WHERE l.username = 'sam'").fetchall()
    return {ruid: phone for ruid, phone in rows}
