"""Scanners banned in the firewall (issue 19, item 5): a built-in fail2ban for SIP.

The driver tells of each failed SIP authentication Asterisk reports over AMI, or FreeSWITCH
over ESL (``sofia::register_failure``: backline/pbx/freeswitch/security.py), with its kind and
source address; the core's :class:`~backline.core.bans.FailureWindow` says when a source has failed
too often, and this puts it in the ``banned4``/``banned6`` set of the rules ``backline render
--firewall`` wrote, with the ban's length as the element's timeout: the kernel drops its
packets and forgets it then.  ``nft`` runs where the controller runs, which must be the
network namespace (the host) where the PBX receives SIP.  Logged with the address only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Collection

from backline.core.bans import BanPolicy, FailureWindow
from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.render.firewall import BANNED4, BANNED6, TABLE

log = logging.getLogger("backline.bans")


class ScannerBans:
    """Counts failures per source and bans the ones past the policy."""

    def __init__(self, pbx: AsteriskPbx | FreeswitchPbx, *,
                 counted: Callable[[str], None] = lambda _: None,
                 clock: Callable[[], float] = time.monotonic, nft: str = "nft",
                 registered: Callable[[], Collection[str]] = frozenset) -> None:
        bans = pbx.bans
        policy = BanPolicy(bans.failures, bans.window_seconds, bans.ban_minutes) \
            if bans is not None else BanPolicy()
        carrier = pbx.trunk.addresses or tuple(h for h in (pbx.trunk.host,) if _is_ip(h))
        # Kamailio as the registrar: every desk phone's request (and the carrier's calls)
        # reaches this node from its address, so a phone's wrong digest fails "from" it;
        # banned, it would cut off every desk phone, 911 included.
        registrar = pbx.registrar if isinstance(pbx, AsteriskPbx) else None
        relays = tuple(h for h in ((registrar.host,) if registrar is not None else ())
                       if _is_ip(h.strip("[]")))
        self.window = FailureWindow(policy, never=(*carrier, *(h.strip("[]") for h in relays)))
        self.counted = counted  # "failure", "banned", "ban_failed": the metrics
        self.clock = clock
        self.nft = nft
        # Addresses a desk phone is registered from now: never banned, whatever fails from
        # them (a stale password on a second account, or UDP forged with a phone's address),
        # or that phone could not dial 911 for the ban's length.
        self.registered = registered
        self.tasks: set[asyncio.Task[None]] = set()

    def failed(self, kind: str, source: str) -> None:
        """A failed SIP authentication (``kind``: Asterisk's event name, or sofia's) from
        ``source``."""
        self.counted("failure")
        if source in self.registered():
            return
        if self.window.failed(source, self.clock()):
            task = asyncio.get_running_loop().create_task(self.ban(source, kind))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def ban(self, source: str, kind: str) -> None:
        minutes = self.window.policy.ban_minutes
        banned = BANNED6 if ":" in source else BANNED4
        proc = await asyncio.create_subprocess_exec(
            self.nft, "add", "element", "inet", TABLE, banned,
            f"{{ {source} timeout {minutes}m }}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            self.counted("ban_failed")
            log.error("could not ban %s (nft: %s); are the rules of `backline render "
                      "--firewall` loaded?", source, err.decode(errors="replace").strip())
            return
        self.counted("banned")
        log.warning("banned %s for %d minutes: %d failed SIP authentications within %d s "
                    "(last: %s)", source, minutes, self.window.policy.failures,
                    self.window.policy.window_seconds, kind)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
