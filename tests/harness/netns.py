"""Separate addresses for SIP tests: network namespaces joined by veth pairs.

Loopback hides what a real edge does (which address a packet came from, which one Asterisk
bound, what a NAT rewrites), so these tests put each party in a network namespace of its own:

- ``wan``: the carrier (a second Asterisk playing the provider, SIPp callers and callees
  behind it) and, on an address of its own, a stranger from the internet;
- ``pbx``: the practice's PBX host: the Asterisk under test and the controller (AMI and
  FastAGI stay on this namespace's own loopback);
- ``lan``: the practice's desk phones (SIPp, baresip).

``pbx`` has one leg in ``wan`` and one in ``lan``; ``wan`` and ``lan`` only reach each other
through it (and it does not forward).  ``Topology(nat=True)`` puts the PBX behind the
practice's router instead: a ``gw`` namespace between the PBX's WAN leg and the WAN, which
masquerades what leaves (nftables) and forwards what arrives to the PBX (its "DMZ host"), so
the carrier sees only ``pbx_wan``, the router's public address.

Every interface is created inside its namespace (``ip -n NS link add``), never in the
host's, and the namespaces are named per run (``bl<pid><random>-wan``) so that parallel
workers and other people's runs never meet; the addresses are per run too (a random third
octet).  ``Topology`` removes them on exit, after a failed test as well.

Running things inside:
- a command: ``Namespace.argv(...)`` (``ip netns exec NS ...``, which execs: the PID is the
  command's own, so pidfds and process groups keep working);
- Python code: ``Namespace.call(fn)`` runs ``fn`` in a fresh thread that joined the namespace
  (setns(2) changes only the calling thread).  A socket keeps the namespace it was made in,
  and threads and processes started from that thread start in it too: ``Namespace.run(main)``
  runs a whole asyncio program there (the controller, its AMI and FastAGI links, the chroot
  Asterisk it starts, ``asyncio.to_thread`` workers).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

from tests.harness.ports import listen_port, media_port_pair

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(Exception):
    """An ``ip`` command failed while building or removing a topology."""


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise NamespaceError with its stderr when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def run(argv: list[str], stdin: str = "") -> None:
    """Run a command (with ``stdin``); raise NamespaceError with its stderr if it fails."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Namespace:
    """One network namespace of a topology, by name."""

    name: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def enter(self) -> None:
        """Move the calling thread into this namespace (for good: use a thread of its own)."""
        fd = os.open(f"{NETNS_DIR}/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {self.name}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a fresh thread inside this namespace; its result or its exception."""
        out: list[T] = []
        failed: list[BaseException] = []

        def body() -> None:
            try:
                self.enter()
                out.append(fn())
            except BaseException as exc:  # handed to the caller's thread, re-raised there
                failed.append(exc)

        thread = threading.Thread(target=body, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return out[0]

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """An asyncio program run to its end inside this namespace (``asyncio.run``)."""
        async def program() -> T:
            return await main()
        return self.call(lambda: asyncio.run(program()))

    def free_port(self, address: str) -> int:
        """A port free on ``address`` in this namespace (UDP and TCP) right now, for a server
        to bind soon: as tests/harness/ports.py hands them out, not from the kernel, whose
        bind to port 0 gives one of the namespace's ephemeral ports, which the next such pick
        or any client socket there could take before the server binds it."""
        return self.call(lambda: listen_port(address))

    def free_media_port(self, address: str) -> int:
        """An even port P with P and P+2 free on ``address`` (SIPp's audio and video)."""
        return self.call(lambda: media_port_pair(address))


@dataclass(frozen=True)
class Addresses:
    """This run's addresses: ``10.201.N.0/24`` the WAN, ``10.202.N.0/24`` the LAN."""

    third: int

    @property
    def wan_net(self) -> str:
        return f"10.201.{self.third}.0/24"

    @property
    def lan_net(self) -> str:
        return f"10.202.{self.third}.0/24"

    def wan(self, host: int) -> str:
        return f"10.201.{self.third}.{host}"

    def lan(self, host: int) -> str:
        return f"10.202.{self.third}.{host}"


# Who has which address (the last octet).  The carrier has two, as providers do (a signalling
# address per region); the stranger is on the internet, neither carrier nor practice.
CARRIER, CARRIER_2, PSTN, STRANGER, PBX_WAN = 1, 2, 50, 66, 200
PBX_LAN, PHONES = 1, 10


@dataclass
class Topology:
    """``wan`` (carrier, PSTN, stranger) ↔ ``pbx`` ↔ ``lan`` (desk phones).

    Use as a context manager: built on entry, every namespace deleted on exit."""

    nat: bool = False
    branch: bool = False
    scanner: bool = False
    prefix: str = field(default_factory=lambda: f"bl{os.getpid()}{os.urandom(2).hex()}")
    addresses: Addresses = field(default_factory=lambda: Addresses(random.randrange(256)))
    made: list[Namespace] = field(default_factory=list)

    @property
    def wan(self) -> Namespace:
        return Namespace(f"{self.prefix}-wan")

    @property
    def pbx(self) -> Namespace:
        return Namespace(f"{self.prefix}-pbx")

    @property
    def lan(self) -> Namespace:
        return Namespace(f"{self.prefix}-lan")

    @property
    def home(self) -> Namespace:
        """Desk phones behind a NAT of their own (``branch=True``): a branch office."""
        return Namespace(f"{self.prefix}-home")

    @property
    def br(self) -> Namespace:
        """The branch office's router (``branch=True``), masquerading towards the PBX."""
        return Namespace(f"{self.prefix}-br")

    @property
    def site_net(self) -> str:
        """Where the branch's router meets the PBX: its outside address is on it."""
        return f"10.205.{self.addresses.third}.0/24"

    def home_phone(self, n: int = 0) -> str:
        """The ``n``-th desk phone's private address behind the branch's NAT."""
        return f"10.204.{self.addresses.third}.{PHONES + n}"

    @property
    def scan(self) -> Namespace:
        """A second LAN segment (``scanner=True``, the practice's Wi-Fi, say) with one
        device of its own on it: ``scan_net``, the device at ``scanning``."""
        return Namespace(f"{self.prefix}-scan")

    @property
    def scan_net(self) -> str:
        return f"10.206.{self.addresses.third}.0/24"

    @property
    def scanning(self) -> str:
        return f"10.206.{self.addresses.third}.{PHONES}"

    @property
    def gw(self) -> Namespace:
        """The practice's router (with ``nat=True``)."""
        return Namespace(f"{self.prefix}-gw")

    # ----- where each party is

    @property
    def carrier(self) -> str:
        return self.addresses.wan(CARRIER)

    @property
    def carrier_2(self) -> str:
        return self.addresses.wan(CARRIER_2)

    @property
    def pstn(self) -> str:
        return self.addresses.wan(PSTN)

    @property
    def stranger(self) -> str:
        return self.addresses.wan(STRANGER)

    @property
    def pbx_wan(self) -> str:
        """The PBX's address on the WAN: its own, or (``nat=True``) its router's."""
        return self.addresses.wan(PBX_WAN)

    @property
    def inside(self) -> str:
        """The PBX's address towards its router (``nat=True``)."""
        return f"10.203.{self.addresses.third}.2"

    @property
    def router_inside(self) -> str:
        return f"10.203.{self.addresses.third}.1"

    @property
    def pbx_lan(self) -> str:
        return self.addresses.lan(PBX_LAN)

    def phone(self, n: int = 0) -> str:
        """The ``n``-th desk phone's address on the LAN."""
        return self.addresses.lan(PHONES + n)

    # ----- building

    def create(self, phones: int = 4) -> None:
        a = self.addresses
        for ns in (self.wan, self.pbx, self.lan, *([self.gw] if self.nat else []),
                   *([self.br, self.home] if self.branch else []),
                   *([self.scan] if self.scanner else [])):
            ip("netns", "add", ns.name)
            self.made.append(ns)
            ip("-n", ns.name, "link", "set", "lo", "up")
        # The PBX's two legs, made inside the namespaces: no interface ever in the host's.
        ip("-n", self.pbx.name, "link", "add", "wan0", "type", "veth",
           "peer", "name", "in0" if self.nat else "up0",
           "netns", (self.gw if self.nat else self.wan).name)
        ip("-n", self.pbx.name, "link", "add", "lan0", "type", "veth",
           "peer", "name", "up0", "netns", self.lan.name)
        if self.nat:
            self._router()
        else:
            ip("-n", self.pbx.name, "addr", "add", f"{self.pbx_wan}/24", "dev", "wan0")
        ip("-n", self.pbx.name, "addr", "add", f"{self.pbx_lan}/24", "dev", "lan0")
        for host in (CARRIER, CARRIER_2, PSTN, STRANGER):
            ip("-n", self.wan.name, "addr", "add", f"{a.wan(host)}/24", "dev", "up0")
        for n in range(phones):
            ip("-n", self.lan.name, "addr", "add", f"{self.phone(n)}/24", "dev", "up0")
        for ns, dev in ((self.pbx, "wan0"), (self.pbx, "lan0"), (self.wan, "up0"),
                        (self.lan, "up0")):
            ip("-n", ns.name, "link", "set", dev, "up")
        if self.branch:
            self._branch()
        if self.scanner:
            third, scan = self.addresses.third, self.scan.name
            ip("-n", self.pbx.name, "link", "add", "scan0", "type", "veth", "peer", "name",
               "up0", "netns", scan)
            ip("-n", self.pbx.name, "addr", "add", f"10.206.{third}.1/24", "dev", "scan0")
            ip("-n", scan, "addr", "add", f"{self.scanning}/24", "dev", "up0")
            for name, dev in ((self.pbx.name, "scan0"), (scan, "up0")):
                ip("-n", name, "link", "set", dev, "up")
            ip("-n", scan, "route", "add", "default", "via", f"10.206.{third}.1")
        if self.nat:
            ip("-n", self.pbx.name, "route", "add", "default", "via", self.router_inside)
            return
        # The PBX's SIP address is its LAN one; the WAN reaches it through the PBX's WAN leg
        # (delivered there, not forwarded: the PBX namespace forwards nothing).
        ip("-n", self.wan.name, "route", "add", f"{self.pbx_lan}/32", "via", self.pbx_wan)

    def _branch(self) -> None:
        """A branch office: phones on 10.204.N.0/24 behind a router that masquerades them
        as 10.205.N.2 towards the PBX (10.205.N.1), which has no route back to them."""
        third = self.addresses.third
        br, home = self.br.name, self.home.name
        ip("-n", self.pbx.name, "link", "add", "site0", "type", "veth", "peer", "name", "out0",
           "netns", br)
        ip("-n", br, "link", "add", "in0", "type", "veth", "peer", "name", "up0",
           "netns", home)
        ip("-n", self.pbx.name, "addr", "add", f"10.205.{third}.1/24", "dev", "site0")
        ip("-n", br, "addr", "add", f"10.205.{third}.2/24", "dev", "out0")
        ip("-n", br, "addr", "add", f"10.204.{third}.1/24", "dev", "in0")
        for n in range(2):
            ip("-n", home, "addr", "add", f"{self.home_phone(n)}/24", "dev", "up0")
        for ns, dev in ((self.pbx.name, "site0"), (br, "out0"), (br, "in0"), (home, "up0")):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", home, "route", "add", "default", "via", f"10.204.{third}.1")
        ip("-n", br, "route", "add", "default", "via", f"10.205.{third}.1")
        run(self.br.argv("sysctl", "-qw", "net.ipv4.ip_forward=1"))
        run(self.br.argv("nft", "-f", "-"), """\
table ip backline_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "out0" masquerade
  }
}
""")

    def _router(self) -> None:
        """The practice's router: ``pbx_wan`` outside, masquerading what leaves; every new
        flow arriving outside goes to the PBX (a "DMZ host", as small routers offer)."""
        gw = self.gw.name
        ip("-n", gw, "link", "add", "out0", "type", "veth", "peer", "name", "up0",
           "netns", self.wan.name)
        ip("-n", self.pbx.name, "addr", "add", f"{self.inside}/24", "dev", "wan0")
        ip("-n", gw, "addr", "add", f"{self.router_inside}/24", "dev", "in0")
        ip("-n", gw, "addr", "add", f"{self.pbx_wan}/24", "dev", "out0")
        for dev in ("in0", "out0"):
            ip("-n", gw, "link", "set", dev, "up")
        ip("-n", gw, "route", "add", self.addresses.lan_net, "via", self.inside)
        run(self.gw.argv("sysctl", "-qw", "net.ipv4.ip_forward=1"))
        rules = f"""\
table ip backline_nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname "out0" ip daddr {self.pbx_wan} udp dport 1024-65535 dnat to {self.pbx_lan}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "out0" masquerade
  }}
}}
"""
        run(self.gw.argv("nft", "-f", "-"), rules)

    def remove(self) -> None:
        """Delete every namespace made (their veths go with them); errors are collected."""
        problems = []
        while self.made:
            ns = self.made.pop()
            try:
                ip("netns", "delete", ns.name)
            except NamespaceError as exc:
                problems.append(str(exc))
        if problems:
            raise NamespaceError("; ".join(problems))

    def __enter__(self) -> Self:
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()
