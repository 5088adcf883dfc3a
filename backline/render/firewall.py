"""nftables rules for the PBX host (``backline render --firewall``), from the config alone.

SIP, its TLS port, RTP and UDPTL are accepted only from the carrier's addresses and the
practice's LAN (issue 19, item 5); AMI and FastAGI only over loopback or from the controller's
address; desk-phone provisioning only from the LAN; the public pages listener stays open.
Ports Backline does not own are left alone (the chain's policy is accept), so applying the
rules never cuts off ssh or anything else the host serves.  The ``banned4``/``banned6`` sets
(entries with a timeout) drop everything from a source that kept failing SIP authentication
(backline/core/bans.py).

For FreeSWITCH the same rules cover its sofia profile's port (UDP and TCP: sofia binds
``transport=udp,tcp`` unless told otherwise, src/mod/endpoints/mod_sofia/sofia.c), its RTP
ports (16384-32768, the core's defaults in src/switch_rtp.c, RTP_START_PORT/RTP_END_PORT,
which Backline does not change; T.38 rides the call's media port there), and keep the Event
Socket (ESL) and the controller's call socket to loopback and the controller's address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from backline.core.connections import AsteriskPbx, FreeswitchPbx, Pages, Pbx

TABLE = "backline"
BANNED4 = "banned4"
BANNED6 = "banned6"
# FreeSWITCH's RTP ports as it ships (src/switch_rtp.c: RTP_START_PORT, RTP_END_PORT).
FREESWITCH_RTP = "16384-32768"


class FirewallError(ValueError):
    """The config names something the rules cannot hold (a carrier known only by name)."""


def _network(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FirewallError(
            f"{where}: {text!r} is not an address or network; the firewall needs the "
            "carrier's addresses (connections.pbx.trunk.addresses)") from None


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _by_family(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
               ) -> list[tuple[str, str]]:
    """``(ip|ip6, "{ ... }")`` for each family that has networks, addresses written plain."""
    out = []
    for family, version in (("ip", 4), ("ip6", 6)):
        items = sorted({str(n.network_address) if n.num_addresses == 1 else str(n)
                        for n in networks if n.version == version})
        if items:
            out.append((family, _set(items)))
    return out


@dataclass(frozen=True, slots=True)
class Edge:
    """What one PBX exposes: SIP and media (``udp``/``tcp`` ports and ranges) for the carrier
    and the LAN, control ports for loopback and the ``controller`` only, and the LAN-only
    provisioning port."""

    udp: tuple[str, ...]
    tcp: tuple[str, ...]
    control: tuple[str, ...]
    controller: str
    provisioning: int | None = None


def edge_of(pbx: Pbx) -> Edge:
    """Asterisk: SIP (and TLS), RTP, UDPTL; AMI and FastAGI, the controller at FastAGI's
    address.  FreeSWITCH: the sofia profile, its RTP ports; ESL and the controller's call
    socket, the controller at the call socket's address."""
    if isinstance(pbx, FreeswitchPbx):
        return Edge((str(pbx.sip.port), FREESWITCH_RTP), (str(pbx.sip.port),),
                    tuple(sorted({str(pbx.esl.port), str(pbx.socket.port)})), pbx.socket.host)
    return Edge((str(pbx.sip.port), f"{pbx.rtp.start}-{pbx.rtp.end}",
                 f"{pbx.udptl.start}-{pbx.udptl.end}"),
                (str(pbx.sip.port), *([str(pbx.tls.port)] if pbx.tls is not None else [])),
                tuple(sorted({str(pbx.ami.port), str(pbx.agi.port)})), pbx.agi.host,
                pbx.provisioning.port if pbx.provisioning is not None else None)


def render_firewall(pbx: AsteriskPbx | FreeswitchPbx, pages: Pages | None) -> str:
    """The ruleset, loadable with ``nft -f`` (it replaces an earlier Backline table).

    Raises FirewallError when the carrier is known only by a host name: rules hold addresses.
    """
    trunk = pbx.trunk
    sources = [_network(s, "connections.pbx.trunk.addresses" if trunk.addresses
                        else "connections.pbx.trunk.host") for s in trunk.sources]
    sources += [_network(n, "connections.pbx.lan") for n in pbx.lan]
    edge = edge_of(pbx)
    udp, tcp, control = list(edge.udp), list(edge.tcp), list(edge.control)
    controller = [ipaddress.ip_network(edge.controller)] \
        if _is_plain_address(edge.controller) else []
    lines = [
        f"# Backline: the PBX's ports only from the carrier and the LAN ({TABLE} table).",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"  set {BANNED4} {{",
        "    type ipv4_addr",
        "    flags timeout",
        "  }",
        f"  set {BANNED6} {{",
        "    type ipv6_addr",
        "    flags timeout",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        '    iifname "lo" accept',
        f"    ip saddr @{BANNED4} counter drop",
        f"    ip6 saddr @{BANNED6} counter drop",
    ]
    for family, allowed in _by_family(sources):
        lines.append(f"    {family} saddr {allowed} udp dport {_set(udp)} accept")
        lines.append(f"    {family} saddr {allowed} tcp dport {_set(tcp)} accept")
    lines.append(f"    udp dport {_set(udp)} counter drop")
    lines.append(f"    tcp dport {_set(sorted(set(tcp)))} counter drop")
    for family, allowed in _by_family(controller):
        lines.append(f"    {family} saddr {allowed} tcp dport {_set(control)} accept")
    lines.append(f"    tcp dport {_set(control)} counter drop")
    if edge.provisioning is not None:  # the phones' files hold their SIP passwords
        lan = [_network(n, "connections.pbx.lan") for n in pbx.lan]
        port = edge.provisioning
        for family, allowed in _by_family(lan):
            lines.append(f"    {family} saddr {allowed} tcp dport {port} accept")
        lines.append(f"    tcp dport {port} counter drop")
    if pages is not None:
        lines.append(f"    tcp dport {pages.listen.port} accept")
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def _is_plain_address(host: str) -> bool:
    """A specific, non-loopback address (loopback is accepted already; ``0.0.0.0`` is none)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)
