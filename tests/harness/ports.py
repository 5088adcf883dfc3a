"""Ports for the servers a test configures before they start (Asterisk's SIP and AMI, the
controller's FastAGI, the SIPp carrier, Kamailio): picked now, bound seconds later.

A port the kernel hands out with ``bind(0)`` comes from its ephemeral range (32768+), the
same range every client connection of the run takes its local port from (AMI, FastAGI,
PostgreSQL, SMTP, HTTP, in this worker or the other): one such connection took Kamailio's
port while the PBX was starting, and Kamailio exited ("Address already in use").  These ports
come from below that range and below the RTP ports local Asterisks use (10000+,
backline.localpbx.ports), each pytest-xdist worker from a share of its own, handed out in
turn so that one worker never gives the same port twice in a row.  The same for a network
namespace's SIPp and servers (tests/harness/netns.py): checked free on their own address
there, as the kernel would otherwise hand them out of that namespace's ephemeral range.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import socket
import threading
from collections.abc import Callable

from backline.localpbx.ports import AsteriskPorts

LISTEN_SPAN = (2000, 5000)  # below 5038/5060/8080, which a developer's `up.sh` may hold
_cursor: int | None = None  # the worker's next port to try
# Ports are picked from more than one thread (a namespace's are picked in a thread that joined
# it, others in asyncio.to_thread workers): two at once must not take the same port.
_picking = threading.Lock()


def _share() -> tuple[int, int]:
    """This worker's part of :data:`LISTEN_SPAN` (``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``)."""
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % count if worker.isdigit() else 0
    width = (LISTEN_SPAN[1] - LISTEN_SPAN[0]) // count
    low = LISTEN_SPAN[0] + index * width
    return low, low + width


def listen_port(address: str = "127.0.0.1") -> int:
    """A port free on ``address`` (in the calling thread's network namespace) for both UDP and
    TCP right now, for a server to bind soon."""
    return _take(lambda port: (port,), address)


def media_port_pair(address: str = "127.0.0.1") -> int:
    """An even port P with P and P+2 free on ``address`` (UDP and TCP) right now: SIPp's
    ``-mp`` audio and video ports."""
    return _take(lambda port: (port, port + 2) if port % 2 == 0 else (), address)


def _take(ports_of: Callable[[int], tuple[int, ...]], address: str) -> int:
    """The worker's next port whose ``ports_of`` are all free (none: not a candidate)."""
    global _cursor
    low, high = _share()
    with _picking:
        if _cursor is None or not low <= _cursor < high:
            _cursor = random.randrange(low, high)  # another run on the machine starts elsewhere
        for _ in range(high - low):
            port, _cursor = _cursor, low + (_cursor + 1 - low) % (high - low)
            wanted = ports_of(port)
            if wanted and all(p < high for p in wanted) and \
                    all(_free(p, address) for p in wanted):
                _cursor = low + (max(wanted) + 1 - low) % (high - low)
                return port
    raise OSError(errno.EADDRINUSE, f"no port free for UDP and TCP on {address} in "
                  f"{low}-{high - 1}")


def _free(port: int, address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        try:
            udp.bind((address, port))
            tcp.bind((address, port))
        except OSError:
            return False
    return True


def asterisk_ports() -> AsteriskPorts:
    """A local Asterisk's ports: its SIP and AMI as :func:`listen_port` picks them, its RTP
    and UDPTL ranges as :meth:`AsteriskPorts.on_free_loopback_ports` places them."""
    return dataclasses.replace(AsteriskPorts.on_free_loopback_ports(), sip=listen_port(),
                               ami=listen_port())
