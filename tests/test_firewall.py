"""``backline render --firewall`` (issue 19, item 5): the rules nft accepts, loaded in the PBX
host's namespace (tests/harness/netns.py), drop SIP from a stranger on the WAN while the
carrier's addresses and the practice LAN get through, and keep AMI from the LAN.

Each drop is seen where it happens, on the rule's counter, before the next probe is sent: no
waiting for something not to arrive."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backline.core.bans import BanPolicy, FailureWindow, source_of
from backline.core.connections import AsteriskPbx, HostPort, Secret, Trunk
from backline.render import firewall
from backline.render.asterisk import QUIET_EVENTS, manager_conf
from tests.harness.netns import Namespace, Topology
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import Host, SippError, register
from tests.harness.transfer_phone import talking_caller, talking_phone, tone_file
from tests.test_asterisk_transfers import until_heard
from tests.test_sip_edge import DIRECT, PATIENT
from tests.test_tls_config import backline, config

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

AMI_PORT = 5038


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def render_firewall(tmp_path: Path, net: Topology, sip_port: int) -> Path:
    path = config(tmp_path, f"    trunk: {{host: {net.carrier}, addresses: [{net.carrier}, "
                            f"{net.carrier_2}/32], port: 5060, insecure_cleartext: true}}\n"
                            f"    lan: [{net.addresses.lan_net}]\n"
                            "    insecure_cleartext: true\n"
                            f"    tls: {{port: 5061, practice_ca: {tmp_path}/ca}}\n",
                  sip_host=net.pbx_lan)
    sip = f"sip: {{host: {net.pbx_lan}, port: "
    path.write_text(path.read_text().replace(sip + "5060}", sip + f"{sip_port}}}"))
    done = backline("render", str(path), "--out", str(tmp_path / "out"), "--firewall")
    assert done.returncode == 0, done.stderr
    return tmp_path / "out" / "firewall.nft"


def nft(ns: Namespace, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(ns.argv("nft", *args), input=stdin, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def dropped(ns: Namespace, proto: str, port: int) -> int:
    """Packets the ``PROTO dport {... PORT ...} counter drop`` rule of Backline's chain
    dropped."""
    listing = nft(ns, "list", "chain", "inet", "backline", "input")
    found = re.search(rf"^\s*{proto} dport [^\n]*\b{port}\b[^\n]* counter packets (\d+) "
                      r"bytes \d+ drop$", listing, re.MULTILINE)
    assert found, listing
    return int(found[1])


def until_dropped(ns: Namespace, proto: str, port: int, count: int) -> None:
    """Until the drop rule has counted ``count`` packets.  The kernel raises no event for a
    counter, so it is polled; the 30 s only bounds a hang (a loaded machine is slow)."""
    deadline = time.monotonic() + 30
    while (seen := dropped(ns, proto, port)) < count:
        assert time.monotonic() < deadline, f"{proto} {port}: {seen} dropped, not {count}"
        time.sleep(0.02)  # a poll of the kernel's counter, not a wait for time


def probe(ns: Namespace, source: str, to: tuple[str, int]) -> None:
    """One UDP datagram from ``source`` in ``ns``, naming where it came from."""
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(f"OPTIONS from {source}".encode(), to)
    ns.call(send)


@needs_root
def test_rendered_rules_drop_a_stranger_and_admit_the_carrier_and_the_lan(
        net: Topology, tmp_path: Path) -> None:
    sip_port = net.pbx.free_port(net.pbx_lan)
    rules = render_firewall(tmp_path, net, sip_port)
    text = rules.read_text()
    assert "5061" in text  # the TLS port, with SIP's
    nft(net.pbx, "-c", "-f", str(rules))
    nft(net.pbx, "-f", str(rules))
    nft(net.pbx, "-f", str(rules))  # applied again: replaces the table, no error

    listener = net.pbx.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    listener.bind((net.pbx_lan, sip_port))
    listener.settimeout(30)  # recvfrom returns on the datagram; this only bounds a hang
    try:
        to = (net.pbx_lan, sip_port)
        probe(net.wan, net.stranger, to)
        until_dropped(net.pbx, "udp", sip_port, 1)
        probe(net.wan, net.carrier, to)
        assert listener.recvfrom(100)[1][0] == net.carrier
        probe(net.wan, net.carrier_2, to)
        assert listener.recvfrom(100)[1][0] == net.carrier_2
        probe(net.lan, net.phone(0), to)
        assert listener.recvfrom(100)[1][0] == net.phone(0)
        # A banned source: the carrier's address put in the set is dropped too.
        nft(net.pbx, "add", "element", "inet", "backline", "banned4",
            f"{{ {net.carrier} timeout 60s }}")
        probe(net.wan, net.carrier, to)
        listing = nft(net.pbx, "list", "chain", "inet", "backline", "input")
        deadline = time.monotonic() + 30  # a bound on a hang (no event for a counter)
        while "@banned4 counter packets 0 " in listing:
            assert time.monotonic() < deadline, listing
            time.sleep(0.02)  # a poll of the kernel's counter, not a wait for time
            listing = nft(net.pbx, "list", "chain", "inet", "backline", "input")
        probe(net.lan, net.phone(0), to)
        assert listener.recvfrom(100)[1][0] == net.phone(0)  # not the banned carrier's
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.recvfrom(100)  # nothing from the stranger or the banned carrier
    finally:
        listener.close()

    # AMI from the LAN: its SYN dropped (a desk phone may send SIP, never reach AMI).
    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            sock.connect_ex((net.pbx_lan, AMI_PORT))
            until_dropped(net.pbx, "tcp", AMI_PORT, 1)
    before = dropped(net.pbx, "tcp", AMI_PORT)
    assert before == 0
    net.lan.call(connect)


def test_render_firewall_refuses_a_carrier_known_only_by_name(tmp_path: Path) -> None:
    path = config(tmp_path, "    trunk: {host: sip.carrier.example, port: 5060, "
                            "insecure_cleartext: true}\n")
    done = backline("render", str(path), "--out", str(tmp_path / "out"), "--firewall")
    assert done.returncode == 2
    assert "connections.pbx.trunk.host: 'sip.carrier.example' is not an address" in done.stderr
    assert not (tmp_path / "out" / "firewall.nft").exists()


@pytest.fixture()
def wifi() -> Iterator[Topology]:
    with Topology(scanner=True) as topology:
        yield topology


@needs_root
@pytest.mark.asterisk
def test_a_scanner_failing_auth_is_banned_while_a_desk_phone_registers_and_talks(
        wifi: Topology, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device on the practice's second LAN segment guesses Dr. Lee's password: after three
    failures (connections.pbx.bans) the controller puts it in the firewall's set and the PBX
    host drops its packets; a desk phone on the LAN still registers and takes a call."""
    net = wifi
    caplog.set_level(logging.INFO, logger="backline.bans")

    async def body() -> None:
        tone = tone_file(tmp_path / "tone.ulaw")
        bans = "    bans: {failures: 3, window_seconds: 600, ban_minutes: 5}\n"
        async with practice_pbx(tmp_path, "edge-bans", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060,
                                pbx_extra=f"    lan: [{net.addresses.lan_net}, {net.scan_net}]\n"
                                + bans) as p:
            pbx = p.directory.connections.pbx
            assert isinstance(pbx, AsteriskPbx)
            # Backline's AMI user hears the security events; the per-call events stay off.
            manager = manager_conf(pbx, "secret").splitlines()
            assert "security" in next(x for x in manager if x.startswith("read=")).split(",")
            assert f"disabledevents={','.join(QUIET_EVENTS)}" in manager
            rules = firewall.render_firewall(pbx, p.directory.connections.pages)
            nft(net.pbx, "-f", "-", stdin=rules)
            to = (net.pbx_lan, p.ports.sip)
            scanner = Host(net.scanning, net.scan.name)
            for _ in range(3):
                with pytest.raises(SippError):
                    await asyncio.to_thread(register, to, tmp_path, "ana-desk", "guess-1234",
                                            contact_port=5060, aor="ana", host=scanner)
            # Counted once nft has put it in the set (the controller's own report of it).
            deadline = time.monotonic() + 30
            banned = 'backline_sip_auth_total{outcome="banned"} 1.0'
            while banned not in (metrics := p.controller.metrics.render().decode()):
                assert time.monotonic() < deadline, f"the scanner was not banned: {metrics}"
                await asyncio.sleep(0.05)  # a poll of the controller's counter
            assert net.scanning in nft(net.pbx, "list", "set", "inet", "backline", "banned4")
            failures = re.search(r'backline_sip_auth_total\{outcome="failure"\} (\d+)', metrics)
            assert failures and int(failures[1]) >= 3, metrics  # (a retransmission: more)
            # Its next packet is dropped by the ban (counted on the banned set's rule).
            probe(net.scan, net.scanning, to)
            listing = nft(net.pbx, "list", "chain", "inet", "backline", "input")
            deadline = time.monotonic() + 30  # a bound on a hang (no event for a counter)
            while f"@{firewall.BANNED4} counter packets 0 " in listing:
                assert time.monotonic() < deadline, listing
                await asyncio.sleep(0.05)  # a poll of the kernel's counter
                listing = nft(net.pbx, "list", "chain", "inet", "backline", "input")

            # The desk phone on the LAN registers and answers a call from the carrier.
            phone = await asyncio.to_thread(
                talking_phone, to, tmp_path, "ana-desk", p.secret("ana-desk"),
                aor="ana", audio=tone, host=Host(net.phone(0), net.lan.name))
            caller = None
            try:
                await p.driver.wait_registered({"ana"}, within=30)
                caller = talking_caller(to, tmp_path, DIRECT, from_user=PATIENT, audio=tone,
                                        host=Host(net.carrier, net.wan.name))
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER",
                    within=30)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-")
                await until_heard(p, answered["Channel"], answered["DestChannel"])
            finally:
                phone.kill()
                if caller is not None:
                    caller.kill()
    net.pbx.run(body)
    banned = [r.getMessage() for r in caplog.records if r.name == "backline.bans"]
    assert banned and net.scanning in banned[0], banned
    assert not any(PATIENT[2:] in m or "ana" in m for m in banned), banned


def test_a_source_is_banned_after_its_failures_within_the_window_and_never_the_carrier(
        ) -> None:
    window = FailureWindow(BanPolicy(failures=3, window_seconds=60), never=["203.0.113.0/29"])
    assert not window.failed("198.51.100.7", 0) and not window.failed("198.51.100.7", 30)
    assert not window.failed("198.51.100.7", 61)  # the first has left the window
    assert window.failed("198.51.100.7", 62)
    assert not window.failed("198.51.100.7", 63)  # counted afresh after a ban
    assert not any(window.failed("203.0.113.5", t) for t in range(10))  # the carrier
    assert not any(window.failed("127.0.0.1", t) for t in range(10))
    assert source_of("IPV4/UDP/198.51.100.7/5060") == "198.51.100.7"
    assert source_of("IPV6/TLS/[2001:db8::1]/5061") == "2001:db8::1"
    assert source_of("IPV4/UDP/not-an-address/5060") is None
    assert source_of("") is None


def test_check_names_a_bad_ban_setting(tmp_path: Path) -> None:
    path = config(tmp_path, "    bans: {failures: 0, window_seconds: 60, ban_minutes: 60}\n")
    done = backline("check", str(path))
    assert done.returncode == 2
    assert "connections.pbx.bans.failures: a whole number from 1 to 1000" in done.stderr


def test_provisioning_is_reached_only_from_the_lan() -> None:
    pbx = AsteriskPbx(ami=HostPort("127.0.0.1", 5038), ami_username="backline",
                      ami_secret=Secret(env="X"), agi=HostPort("127.0.0.1", 4573),
                      sip=HostPort("192.168.1.2", 5060), trunk=Trunk(host="203.0.113.9"),
                      lan=("192.168.1.0/24",), provisioning=HostPort("192.168.1.2", 8443))
    rules = firewall.render_firewall(pbx, None).splitlines()
    assert "    ip saddr { 192.168.1.0/24 } tcp dport 8443 accept" in rules
    assert "    tcp dport 8443 counter drop" in rules
    assert "    ip saddr { 192.168.1.0/24, 203.0.113.9 } udp dport { 5060, 10000-10199, " \
           "4000-4039 } accept" in rules


async def test_an_address_a_desk_phone_is_registered_from_is_never_banned() -> None:
    # Failures from a registered phone's address (a stale second account, or UDP forged with
    # the phone's address) must not cut that phone off: it could not dial 911 for an hour.
    from backline.core.connections import Bans
    from backline.core.ownership import OwnershipBook
    from backline.core.registrations import Registrations
    from backline.features.bans import ScannerBans
    from tests.practice import directory, user

    book = OwnershipBook(directory([user("ana")], [], []))
    registrations = Registrations(book, 2)
    phone = book.desk_phones("ana")[0]
    registrations.register(phone, "sip:ana@192.168.1.40:5060;transport=udp", 0.0)
    registrations.register(phone, "sip:ana@[2001:db8::40]:5062", 0.0)
    assert registrations.contact_hosts() == {"192.168.1.40", "2001:db8::40"}
    pbx = AsteriskPbx(ami=HostPort("127.0.0.1", 5038), ami_username="backline",
                      ami_secret=Secret(env="X"), agi=HostPort("127.0.0.1", 4573),
                      sip=HostPort("192.168.1.2", 5060), trunk=Trunk(host="203.0.113.9"),
                      lan=("192.168.1.0/24",), bans=Bans(failures=2, window_seconds=60,
                                                         ban_minutes=60))
    outcomes: list[str] = []
    bans = ScannerBans(pbx, counted=outcomes.append, clock=lambda: 0.0, nft="false",
                       registered=registrations.contact_hosts)
    for _ in range(5):
        bans.failed("InvalidPassword", "192.168.1.40")
        bans.failed("InvalidPassword", "2001:db8::40")
    bans.failed("InvalidPassword", "192.168.1.66")  # a scanner on the LAN: banned
    bans.failed("InvalidPassword", "192.168.1.66")
    await asyncio.gather(*bans.tasks)
    assert outcomes.count("failure") == 12
    assert outcomes.count("ban_failed") == 1  # `false` as nft: the one ban was tried


async def test_the_registrar_the_desk_phones_calls_come_through_is_never_banned() -> None:
    # Behind Kamailio as the registrar, every desk phone's INVITE (and the carrier's calls)
    # reach this node from Kamailio's address, so a digest a phone gets wrong fails "from"
    # Kamailio.  Banned, it would cut off every desk phone, 911 included, for the ban's
    # length: one phone with a stale password, or a LAN host guessing, must never do that.
    from backline.core.connections import Bans
    from backline.features.bans import ScannerBans

    pbx = AsteriskPbx(ami=HostPort("127.0.0.1", 5038), ami_username="backline",
                      ami_secret=Secret(env="X"), agi=HostPort("127.0.0.1", 4573),
                      sip=HostPort("192.168.1.2", 5060), trunk=Trunk(host="203.0.113.9"),
                      lan=("192.168.1.0/24",), registrar=HostPort("192.168.1.5", 5060),
                      bans=Bans(failures=2, window_seconds=60, ban_minutes=60))
    outcomes: list[str] = []
    bans = ScannerBans(pbx, counted=outcomes.append, clock=lambda: 0.0, nft="false")
    for _ in range(5):
        bans.failed("ChallengeResponseFailed", "192.168.1.5")
    bans.failed("InvalidPassword", "192.168.1.66")  # a scanner reaching the node: banned
    bans.failed("InvalidPassword", "192.168.1.66")
    await asyncio.gather(*bans.tasks)
    assert outcomes.count("failure") == 7
    assert outcomes.count("ban_failed") == 1  # `false` as nft: only the scanner's was tried
