"""The PBX's edge in the clear: desk phones' SIP and audio on the LAN (to the PBX, or to
Kamailio as their registrar), the carrier's SIP or its calls' audio on the internet.  As with
mail and the listeners (settings.outbound.cleartext), cleartext goes only to this machine
unless ``insecure_cleartext: true`` says the operator accepts it, and then a warning says
INSECURE at `backline check` and at every start.  Refused here, a config never runs, so
nothing at call time changes: a 911 call is never blocked by it."""

from __future__ import annotations

from collections.abc import Iterable

from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap
from backline.core.connections import AsteriskPbx, Pbx
from backline.core.model import User
from backline.core.wire import (
    desk_phones_in_the_clear,
    phones_sip_where,
    trunk_in_the_clear,
    trunk_media_in_the_clear,
)

F = "connections.pbx"


def check_cleartext_edge(r: Reader, top: YMap, users: Iterable[User], pbx: Pbx | None) -> None:
    """Refuse desk phones' and the carrier's plain SIP off this machine, unless opted out."""
    connections = entry(top, "connections")
    node = entry(connections, "pbx") if isinstance(connections, YMap) else None
    if pbx is None or not isinstance(node, YMap):
        return
    _desk_phones(r, node, pbx, desk_phones_in_the_clear(pbx, users))
    trunk = entry(node, "trunk")
    if isinstance(trunk, YMap):
        _trunk(r, trunk, pbx)


def _desk_phones(r: Reader, node: YMap, pbx: Pbx, phones: tuple[str, ...]) -> None:
    if not phones:
        if pbx.insecure_cleartext:
            r.problem(where_of(node, "insecure_cleartext"), f"{F}.insecure_cleartext",
                      "removed: no desk phone's SIP or audio is in the clear on a network "
                      "(SIP on loopback, or every phone encryption: required), so the "
                      "opt-out has no effect", warning=True)
        return
    names = ", ".join(phones)
    where = phones_sip_where(pbx)
    exposed = (f"desk phones {names}: their SIP (who calls whom, callers' numbers) and call "
               "audio")
    if pbx.insecure_cleartext:
        r.problem(where_of(node, "insecure_cleartext"), f"{F}.insecure_cleartext",
                  f"false: INSECURE: {exposed} cross the LAN unencrypted ({where}), "
                  "readable by anyone on it", warning=True)
        return
    if isinstance(pbx, AsteriskPbx) and pbx.registrar is not None:
        # No fix but consent yet: behind Kamailio the nodes reach phones over plain SIP and
        # their audio is never SRTP (settings.pbx refuses encryption: required there).
        key, wanted = "registrar", ("Kamailio on this machine's loopback, or no registrar "
                                    "(behind Kamailio as the registrar desk phones' audio is "
                                    "never SRTP: not supported there yet)")
    elif isinstance(pbx, AsteriskPbx):
        key, wanted = "encryption", ("required, with tls: (SIP over TLS, audio SRTP; or "
                                     "encryption: required on each of these phones)")
    else:
        key, wanted = "sip", "a loopback address (FreeSWITCH renders no TLS or SRTP for desk " \
                             "phones yet)"
    r.problem(where_of(node, key) if key in node.entries else where_of(node, "sip"),
              f"{F}.{key}",
              f"{wanted}: {exposed} would cross the network ({where}) readable by anyone "
              "(cleartext only on this machine: a loopback SIP address and no lan); to "
              f"send them so anyway, set {F}.insecure_cleartext: true")


def _trunk(r: Reader, node: YMap, pbx: Pbx) -> None:
    consent = pbx.trunk.insecure_cleartext
    f = f"{F}.trunk"
    if trunk_media_in_the_clear(pbx):
        _trunk_media(r, node, pbx)
        return
    if not trunk_in_the_clear(pbx):
        if consent:
            r.problem(where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                      "removed: the carrier is this machine or reached over tls with srtp, "
                      "so the opt-out has no effect", warning=True)
        return
    exposed = (f"calls to and from the carrier ({pbx.trunk.host}): their SIP (callers' and "
               "dialled numbers) and audio")
    if consent:
        r.problem(where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                  f"false: INSECURE: {exposed} cross the internet unencrypted, readable by "
                  "anyone on the path", warning=True)
        return
    wanted = ("true, with connections.pbx.tls (and srtp: true for the audio)"
              if isinstance(pbx, AsteriskPbx) else "a carrier on this machine (FreeSWITCH "
              "renders no TLS to the carrier yet)")
    r.problem(where_of(node, "tls" if "tls" in node.entries else "host"),
              f"{f}.tls" if isinstance(pbx, AsteriskPbx) else f"{f}.host",
              f"{wanted}: {exposed} would cross the internet readable by anyone "
              "(cleartext only to this machine); for a carrier that offers only UDP, set "
              f"{f}.insecure_cleartext: true (emergency calls go out either way)")


def _trunk_media(r: Reader, node: YMap, pbx: Pbx) -> None:
    """The carrier's SIP over TLS, its calls' audio plain: the conversations themselves."""
    f = f"{F}.trunk"
    exposed = (f"carrier media: the calls' audio (the conversations) to and from the carrier "
               f"({pbx.trunk.host})")
    if pbx.trunk.insecure_cleartext:
        r.problem(where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                  f"false: INSECURE: {exposed} crosses the internet as plain RTP (only its "
                  "SIP is TLS), readable by anyone on the path", warning=True)
        return
    r.problem(where_of(node, "srtp" if "srtp" in node.entries else "tls"), f"{f}.srtp",
              f"true: {exposed} would cross the internet as plain RTP, readable by anyone "
              "on the path (tls encrypts only the SIP); turn on the carrier's SRTP (SDES) and "
              f"set {f}.srtp: true, or, for a carrier that offers no SRTP, set "
              f"{f}.insecure_cleartext: true (emergency calls go out either way)")
