"""When a source that keeps failing SIP authentication is banned (issue 19, item 5).  Pure.

Asterisk reports each failed attempt as an AMI security event (an unknown account, a wrong
password or challenge response, a request refused by an ACL) naming the source's address.  A
source with ``failures`` of them within ``window_seconds`` is banned for ``ban_minutes``: the
controller puts it in the firewall's banned set (backline/render/firewall.py), where the
kernel drops its packets and lets the ban lapse.  The carrier is never banned: a mistyped
trunk password must not cut off the practice's calls.

Times come in as arguments (seconds on a monotonic clock); nothing here reads the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

# Asterisk's security events that are a failed attempt (ChallengeSent, SuccessfulAuth... are
# not): doc/asterisk/security-events in Asterisk's own documentation names them.
FAILURES = frozenset({"InvalidAccountID", "ChallengeResponseFailed", "InvalidPassword",
                      "FailedACL"})
# Sources tracked at once; past it the oldest is forgotten (a spray costs bounded memory).
MAX_SOURCES = 10_000


@dataclass(frozen=True, slots=True)
class BanPolicy:
    failures: int = 5
    window_seconds: int = 60
    ban_minutes: int = 60


def source_of(remote_address: str) -> str | None:
    """The address in an event's ``RemoteAddress`` (``IPV4/UDP/10.0.0.9/5060``), or None
    when it names none (a malformed event bans nobody)."""
    parts = remote_address.split("/")
    if len(parts) != 4 or parts[0] not in ("IPV4", "IPV6"):
        return None
    try:
        return str(ipaddress.ip_address(parts[2].strip("[]")))
    except ValueError:
        return None


class FailureWindow:
    """Each source's recent failures; :meth:`failed` says when one is to be banned."""

    def __init__(self, policy: BanPolicy, never: Iterable[str] = ()) -> None:
        self.policy = policy
        self.never = [ipaddress.ip_network(n, strict=False) for n in never]
        self.recent: dict[str, list[float]] = {}

    def exempt(self, source: str) -> bool:
        address = ipaddress.ip_address(source)
        return address.is_loopback or any(address in n for n in self.never)

    def failed(self, source: str, at: float) -> bool:
        """Note a failure from ``source`` at ``at``; True when that makes it one to ban (its
        count then starts again, so a ban is asked for once per ``failures``)."""
        if self.exempt(source):
            return False
        times = [t for t in self.recent.pop(source, []) if at - t < self.policy.window_seconds]
        times.append(at)
        if len(times) >= self.policy.failures:
            return True
        self.recent[source] = times
        while len(self.recent) > MAX_SOURCES:
            del self.recent[next(iter(self.recent))]
        return False
