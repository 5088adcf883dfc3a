"""FreeSWITCH behind the same edge as Asterisk (issue 19, item 5): ``backline render
--firewall`` for a FreeSWITCH config, loaded in the PBX host's namespace
(tests/harness/netns.py), admits its sofia port and RTP ports only from the carrier and the
LAN and keeps ESL and the call socket from the LAN; and sofia's refused digests
(``sofia::register_failure`` over ESL, from the test server that speaks the wire byte for
byte: tests/harness/eslserver.py) ban a scanner into that firewall's set, never the carrier,
loopback, or an address a desk phone is registered from."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from backline.core.connections import Bans, FreeswitchPbx, HostPort, Secret, Trunk
from backline.features.bans import ScannerBans
from backline.pbx.freeswitch import names
from backline.render.firewall import render_firewall
from tests.harness.freeswitch_rig import fs_rig
from tests.harness.netns import Topology
from tests.test_firewall import dropped, nft, probe, until_dropped
from tests.test_freeswitch_driver import practice
from tests.test_tls_config import ROOT, backline

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

ESL_PORT, SOCKET_PORT = 8021, 8084
RTP_PORT = 20000  # within FreeSWITCH's own 16384-32768


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def freeswitch_config(tmp_path: Path, net: Topology, sip_port: int) -> Path:
    """The example practice on FreeSWITCH, SIP on the PBX's LAN address."""
    text = (ROOT / "config" / "example.yaml").read_text()
    start = text.index("  pbx:\n    kind: asterisk\n")
    end = text.index("    fax_dir:", start)
    text = text[:start] + (
        "  pbx:\n"
        "    kind: freeswitch\n"
        f"    esl: {{host: 127.0.0.1, port: {ESL_PORT}, password_env: BACKLINE_ESL_PASSWORD}}\n"
        f"    socket: {{host: 127.0.0.1, port: {SOCKET_PORT}}}\n"
        f"    sip: {{host: {net.pbx_lan}, port: {sip_port}}}\n"
        f"    trunk: {{host: {net.carrier}, port: 5060, insecure_cleartext: true}}\n"
        f"    lan: [{net.addresses.lan_net}]\n"
        "    insecure_cleartext: true\n"
        "    bans: {failures: 3, window_seconds: 60, ban_minutes: 60}\n") + text[end:]
    text = text.replace("sqlite:///var/lib/backline/journal.db", f"sqlite://{tmp_path}/j.db")
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    return path


def test_freeswitch_rules_admit_sofia_and_rtp_from_the_carrier_and_lan_and_keep_esl_in(
        net: Topology, tmp_path: Path) -> None:
    sip_port = net.pbx.free_port(net.pbx_lan)
    config = freeswitch_config(tmp_path, net, sip_port)
    checked = backline("check", str(config))
    assert checked.returncode == 0, checked.stderr
    done = backline("render", str(config), "--out", str(tmp_path / "out"), "--firewall")
    assert done.returncode == 0, done.stderr
    rules = tmp_path / "out" / "firewall.nft"
    text = rules.read_text()
    assert f"udp dport {{ {sip_port}, 16384-32768 }} counter drop" in text
    assert f"tcp dport {{ {ESL_PORT}, {SOCKET_PORT} }} counter drop" in text
    nft(net.pbx, "-c", "-f", str(rules))
    nft(net.pbx, "-f", str(rules))

    listeners = []
    try:
        for port in (sip_port, RTP_PORT):
            listener = net.pbx.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            listeners.append(listener)
            listener.bind((net.pbx_lan, port))
            listener.settimeout(30)  # recvfrom returns on the datagram
            to = (net.pbx_lan, port)
            # One rule drops both (its counter found by SIP's port, the range beside it).
            before = dropped(net.pbx, "udp", sip_port)
            probe(net.wan, net.stranger, to)
            until_dropped(net.pbx, "udp", sip_port, before + 1)
            probe(net.wan, net.carrier, to)
            assert listener.recvfrom(100)[1][0] == net.carrier
            probe(net.lan, net.phone(0), to)
            assert listener.recvfrom(100)[1][0] == net.phone(0)
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.recvfrom(100)  # nothing from the stranger
    finally:
        for listener in listeners:
            listener.close()

    # ESL from a desk phone on the LAN: its SYN is dropped (it may send SIP, never commands).
    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            sock.connect_ex((net.pbx_lan, ESL_PORT))
            until_dropped(net.pbx, "tcp", ESL_PORT, before + 1)
    before = dropped(net.pbx, "tcp", ESL_PORT)
    net.lan.call(connect)


def test_sofias_refused_digests_ban_a_scanner_never_the_carrier_loopback_or_a_desk_phone(
        net: Topology) -> None:
    pbx = FreeswitchPbx(esl=HostPort("127.0.0.1", ESL_PORT), esl_password=Secret(env="UNUSED"),
                        sip=HostPort(net.pbx_lan, 5060), trunk=Trunk(host=net.carrier),
                        lan=(net.addresses.lan_net,),
                        bans=Bans(failures=3, window_seconds=60, ban_minutes=60))
    registered_phone, listed_phone, lan_scanner = net.phone(0), net.phone(1), net.phone(2)
    spared = (registered_phone, listed_phone, net.carrier, "127.0.0.1")
    outcomes: list[str] = []

    async def body() -> None:
        nft(net.pbx, "-f", "-", stdin=render_firewall(pbx, None))
        changed = asyncio.Event()

        def counted(outcome: str) -> None:
            outcomes.append(outcome)
            changed.set()

        async with fs_rig(practice()) as rig:
            assert names.REGISTER_FAILURE in names.SUBSCRIPTIONS
            rig.driver.on_security = ScannerBans(
                pbx, counted=counted, registered=rig.driver.registered_from).failed
            # Ana's phone registers (sofia::register names where from); Sam's is only in
            # the list a restarted FreeSWITCH gives after the next login.
            rig.register("ana-p0", source=registered_phone)
            rig.registered["tok-sam"] = ("sam-p0", 2_000_000_000.0)
            rig.sources["tok-sam"] = listed_phone
            rig.server.connections[0].drop()
            await rig.server.wait_connection(2)
            await rig.driver.wait_registered({"ana", "sam"}, 30)

            for source in spared:  # a stale second account on a phone; a carrier typo
                for _ in range(5):
                    rig.refuse_digest("ana-p0", source)
            for source in (lan_scanner, net.stranger):
                rig.refuse_digest("100", source, "INVITE")
                rig.refuse_digest("admin", source)
                rig.refuse_digest("1000", source)
            while outcomes.count("banned") + outcomes.count("ban_failed") < 2:
                changed.clear()
                await asyncio.wait_for(changed.wait(), 30)

    net.pbx.run(body)
    assert outcomes.count("failure") == 5 * len(spared) + 6
    assert outcomes.count("banned") == 2, outcomes
    banned = nft(net.pbx, "list", "set", "inet", "backline", "banned4")
    assert lan_scanner in banned and net.stranger in banned
    assert not any(source in banned for source in spared), banned
