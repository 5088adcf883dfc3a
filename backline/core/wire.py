"""What of the PBX's edge crosses the network unencrypted (docs/security.md, "What is and is
not encrypted on the wire").  Pure: the config in, names and sentences out; `backline check`
refuses each unless the operator opted out, and the start and the status page say INSECURE."""

from __future__ import annotations

from collections.abc import Iterable

from backline.core.addresses import is_loopback
from backline.core.connections import AsteriskPbx, Encryption, Pbx
from backline.core.model import User


def registrar_faces_network(pbx: Pbx | None) -> bool:
    """Whether Kamailio as the desk phones' registrar listens off loopback: the phones' SIP
    goes to its listeners there (plain UDP and TCP beside any TLS), and behind it their audio
    is never SRTP (not rendered there yet: settings.pbx refuses ``encryption: required``)."""
    return (isinstance(pbx, AsteriskPbx) and pbx.registrar is not None
            and not is_loopback(pbx.registrar.host.strip("[]")))


def sip_off_machine(pbx: Pbx) -> bool:
    """Whether desk phones reach SIP over a network: it listens off loopback, a LAN is
    named, or the registrar they register with listens off loopback."""
    return (not is_loopback(pbx.sip.host.strip("[]")) or bool(pbx.lan)
            or registrar_faces_network(pbx))


def phones_sip_where(pbx: Pbx) -> str:
    """Where the desk phones' SIP goes, for a sentence: the registrar's address when there is
    one, else the PBX's own (and its LAN)."""
    if isinstance(pbx, AsteriskPbx) and pbx.registrar is not None:
        where = f"SIP to the registrar on {pbx.registrar.host}:{pbx.registrar.port}"
    else:
        where = f"SIP on {pbx.sip.host}"
    return where + (f", lan {', '.join(pbx.lan)}" if pbx.lan else "")


def desk_phones_in_the_clear(pbx: Pbx | None, users: Iterable[User]) -> tuple[str, ...]:
    """Active users' desk phones whose SIP and audio cross the LAN in the clear: SIP off
    loopback and the phone's media not ``encryption: required`` (its own, else the
    practice's; FreeSWITCH renders no SRTP, so all of its; behind Kamailio as the registrar
    none is SRTP, so all of them)."""
    if pbx is None or not sip_off_machine(pbx):
        return ()
    behind_registrar = isinstance(pbx, AsteriskPbx) and pbx.registrar is not None
    clear = []
    for user in users:
        if not user.active:
            continue
        own = {s.desk_phone: s.encryption for s in user.sites}
        for phone in user.desk_phones:
            wanted = own.get(phone) or (pbx.encryption if isinstance(pbx, AsteriskPbx)
                                        else Encryption.OPTIONAL)
            if wanted is not Encryption.REQUIRED or behind_registrar:
                clear.append(phone)
    return tuple(sorted(set(clear)))


def trunk_in_the_clear(pbx: Pbx | None) -> bool:
    """Whether the carrier's SIP (and so its calls' audio) is plain to another machine."""
    return (pbx is not None and bool(pbx.trunk.host) and not pbx.trunk.tls
            and not is_loopback(pbx.trunk.host.strip("[]")))


def trunk_media_in_the_clear(pbx: Pbx | None) -> bool:
    """Whether the carrier's SIP is TLS but its calls' audio (patient conversations) is plain
    RTP to another machine: ``trunk.tls`` without ``trunk.srtp``."""
    return (pbx is not None and bool(pbx.trunk.host) and pbx.trunk.tls
            and not pbx.trunk.srtp and not is_loopback(pbx.trunk.host.strip("[]")))


def insecure(pbx: Pbx | None, users: Iterable[User]) -> tuple[str, ...]:
    """What the operator's opt-outs leave in the clear, a sentence each (the status page and
    ``/status.json``'s ``insecure``): never a caller's number, only phones and hosts."""
    out = []
    phones = desk_phones_in_the_clear(pbx, users)
    if pbx is not None and phones and pbx.insecure_cleartext:
        out.append(f"INSECURE: desk phones {', '.join(phones)}: their SIP and call audio "
                   f"cross the LAN unencrypted ({phones_sip_where(pbx)}; "
                   "connections.pbx.insecure_cleartext)")
    if pbx is not None and trunk_in_the_clear(pbx) and pbx.trunk.insecure_cleartext:
        out.append(f"INSECURE: the carrier trunk ({pbx.trunk.host}): calls' SIP and audio "
                   "cross the internet unencrypted (connections.pbx.trunk.insecure_cleartext)")
    if pbx is not None and trunk_media_in_the_clear(pbx) and pbx.trunk.insecure_cleartext:
        out.append(f"INSECURE: carrier media: the calls' audio to and from the carrier "
                   f"({pbx.trunk.host}) crosses the internet as plain RTP, its SIP over TLS "
                   "but no trunk.srtp (connections.pbx.trunk.insecure_cleartext)")
    return tuple(out)
