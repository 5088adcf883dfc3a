"""Where a local Asterisk listens, and ports free on loopback right now (for tests and
throwaway instances: the kernel picks them, never a guess)."""

from __future__ import annotations

import errno
import random
import socket
from dataclasses import dataclass
from typing import Self

LOOPBACK = "127.0.0.1"

# Ranges chosen by on_free_loopback_ports() stay below the kernel's ephemeral
# range (32768+), so they never meet the ports SIPp or a test got from bind(0).
_RTP_SPAN = (10000, 30000)
_UDPTL_SPAN = (30000, 32700)


@dataclass(frozen=True)
class AsteriskPorts:
    """Where one instance listens; every port on the instance's bind address."""

    sip: int
    ami: int
    rtp_start: int
    rtp_end: int
    udptl_start: int
    udptl_end: int

    def __post_init__(self) -> None:
        for port in (self.sip, self.ami, self.rtp_start, self.rtp_end,
                     self.udptl_start, self.udptl_end):  # fmt: skip
            if not 1 <= port <= 65535:
                raise ValueError(f"port out of range: {port}")
        if self.rtp_start >= self.rtp_end or self.udptl_start >= self.udptl_end:
            raise ValueError("port range start must be below its end")

    @classmethod
    def on_free_loopback_ports(cls, rtp_width: int = 200, udptl_width: int = 40) -> Self:
        """Pick ports free right now on 127.0.0.1 (for tests and throwaway instances).

        SIP and AMI come from the kernel (bind to port 0).  RTP/UDPTL ranges are
        placed at random below the ephemeral range; two instances' ranges may
        overlap, which is harmless: Asterisk skips a port that is taken.
        """
        sip = _free_port_both()
        ami = _free_tcp_port()
        rtp = random.randrange(_RTP_SPAN[0], _RTP_SPAN[1] - rtp_width, 2)
        udptl = random.randrange(_UDPTL_SPAN[0], _UDPTL_SPAN[1] - udptl_width, 2)
        return cls(sip, ami, rtp, rtp + rtp_width, udptl, udptl + udptl_width)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP by default, or UDP), from the kernel."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def _free_port_both() -> int:
    """A port free for both UDP and TCP (pjsip may add a TCP transport on it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP on loopback")
