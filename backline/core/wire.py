"""What of the PBX's edge crosses the network unencrypted (docs/security.md, "What is and is
not encrypted on the wire").  Pure: the config in, names and sentences out; `backline check`
refuses each unless the operator opted out, and the start and the status page say INSECURE."""

from __future__ import annotations

from collections.abc import Iterable

from backline.core.addresses import is_loopback
from backline.core.connections import AsteriskPbx, Encryption, Pbx
from backline.core.model import User


def sip_off_machine(pbx: Pbx) -> bool:
    """Whether desk phones reach SIP over a network: it listens off loopback, or a LAN is
    named."""
    return not is_loopback(pbx.sip.host.strip("[]")) or bool(pbx.lan)


def desk_phones_in_the_clear(pbx: Pbx | None, users: Iterable[User]) -> tuple[str, ...]:
    """Active users' desk phones whose SIP and audio cross the LAN in the clear: SIP off
    loopback and the phone's media not ``encryption: required`` (its own, else the
    practice's; FreeSWITCH renders no SRTP, so all of its)."""
    if pbx is None or not sip_off_machine(pbx):
        return ()
    clear = []
    for user in users:
        if not user.active:
            continue
        own = {s.desk_phone: s.encryption for s in user.sites}
        for phone in user.desk_phones:
            wanted = own.get(phone) or (pbx.encryption if isinstance(pbx, AsteriskPbx)
                                        else Encryption.OPTIONAL)
            if wanted is not Encryption.REQUIRED:
                clear.append(phone)
    return tuple(sorted(set(clear)))


def trunk_in_the_clear(pbx: Pbx | None) -> bool:
    """Whether the carrier's SIP (and so its calls' audio) is plain to another machine."""
    return (pbx is not None and bool(pbx.trunk.host) and not pbx.trunk.tls
            and not is_loopback(pbx.trunk.host.strip("[]")))


def insecure(pbx: Pbx | None, users: Iterable[User]) -> tuple[str, ...]:
    """What the operator's opt-outs leave in the clear, a sentence each (the status page and
    ``/status.json``'s ``insecure``): never a caller's number, only phones and hosts."""
    out = []
    phones = desk_phones_in_the_clear(pbx, users)
    if pbx is not None and phones and pbx.insecure_cleartext:
        out.append(f"INSECURE: desk phones {', '.join(phones)}: their SIP and call audio "
                   f"cross the LAN unencrypted (SIP on {pbx.sip.host}; "
                   "connections.pbx.insecure_cleartext)")
    if pbx is not None and trunk_in_the_clear(pbx) and pbx.trunk.insecure_cleartext:
        out.append(f"INSECURE: the carrier trunk ({pbx.trunk.host}): calls' SIP and audio "
                   "cross the internet unencrypted (connections.pbx.trunk.insecure_cleartext)")
    return tuple(out)
