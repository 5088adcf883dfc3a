"""``backline render --firewall`` (issue 19, item 5): the rules nft accepts, loaded in the PBX
host's namespace (tests/harness/netns.py), drop SIP from a stranger on the WAN while the
carrier's addresses and the practice LAN get through, and keep AMI from the LAN.

Each drop is seen where it happens, on the rule's counter, before the next probe is sent: no
waiting for something not to arrive."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns import Namespace, Topology
from tests.test_tls_config import backline, config

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

AMI_PORT = 5038


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def render_firewall(tmp_path: Path, net: Topology, sip_port: int) -> Path:
    path = config(tmp_path, f"    trunk: {{host: {net.carrier}, addresses: [{net.carrier}, "
                            f"{net.carrier_2}/32], port: 5060}}\n"
                            f"    lan: [{net.addresses.lan_net}]\n"
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
    """Wait (5 s at most) until the drop rule has counted ``count`` packets."""
    deadline = time.monotonic() + 5
    while (seen := dropped(ns, proto, port)) < count:
        assert time.monotonic() < deadline, f"{proto} {port}: {seen} dropped, not {count}"
        time.sleep(0.02)


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
    listener.settimeout(5)
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
        deadline = time.monotonic() + 5
        while "@banned4 counter packets 0 " in listing:
            assert time.monotonic() < deadline, listing
            time.sleep(0.02)
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
    path = config(tmp_path, "    trunk: {host: sip.carrier.example, port: 5060}\n")
    done = backline("render", str(path), "--out", str(tmp_path / "out"), "--firewall")
    assert done.returncode == 2
    assert "connections.pbx.trunk.host: 'sip.carrier.example' is not an address" in done.stderr
    assert not (tmp_path / "out" / "firewall.nft").exists()
