"""Which hosts are this machine or the practice's private network: where cleartext and
control ports (AMI, FastAGI, ESL) may go: never anywhere else.  Pure: names and addresses in,
an answer out; a name other than ``localhost`` is never resolved here, so it counts as remote."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_private(host: str) -> bool:
    """Loopback or a private range (10/8, 172.16/12, 192.168/16, fc00::/7, ...)."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private
