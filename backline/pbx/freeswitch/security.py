"""FreeSWITCH's word on failed SIP authentication, for the scanner bans
(backline/features/bans.py), and the addresses desk phones are registered from, which are
never banned.

mod_sofia fires the CUSTOM event ``sofia::register_failure`` (MY_EVENT_REGISTER_FAILURE,
src/mod/endpoints/mod_sofia/mod_sofia.h) from ``sofia_reg_handle_register_token``
(src/mod/endpoints/mod_sofia/sofia_reg.c) each time it answers 403 to a REGISTER, or to an
INVITE on a profile with ``auth-calls``: ``sofia_reg_parse_auth`` returned AUTH_FORBIDDEN, for
an unknown user (``Can't find user``), a wrong digest response, an empty password or a user
barred from registering.  Its headers: ``profile-name``, ``to-user``, ``to-host``,
``network-ip``, ``network-port``, ``user-agent`` and ``registration-type`` (``REGISTER`` or
``INVITE``).  A mere challenge (401, no credentials yet) fires nothing.  The source is
``network-ip``, the address the request came from (never a header the sender wrote).

``sofia::register`` and ``sofia::unregister``/``sofia::expire`` carry ``network-ip`` and the
registration's ``call-id`` (sofia_reg.c), and ``show registrations`` lists ``network_ip``
beside each ``token`` (the call-id).  Pure: events in, answers out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from backline.pbx.freeswitch import names, wire


def address(text: str | None) -> str | None:
    """``text`` as a plain IP address (normalised), or None when it is not one."""
    try:
        return str(ipaddress.ip_address((text or "").strip().strip("[]")))
    except ValueError:
        return None


def failed_auth(event: wire.Event) -> tuple[str, str] | None:
    """``(kind, source)`` of a ``sofia::register_failure`` (kind: ``register_failure
    REGISTER`` or ``... INVITE``); None for any other event, or one naming no address."""
    if event.name != "CUSTOM" or event.subclass != names.REGISTER_FAILURE:
        return None
    source = address(event.get("network-ip"))
    if source is None:
        return None
    kind = (event.get("registration-type") or "").upper()
    return (f"register_failure {kind}" if kind in ("REGISTER", "INVITE")
            else "register_failure", source)


class RegisteredFrom:
    """Where each registration (by call-id) came from: a ban never cuts off a desk phone
    registered from that address, whatever else fails from it."""

    def __init__(self, rows: Iterable[Mapping[str, str]] = ()) -> None:
        """``rows``: ``show registrations``' rows (``token``, ``network_ip``)."""
        self._by_call: dict[str, str] = {}
        for row in rows:
            found = address(row.get("network_ip"))
            if row.get("token") and found is not None:
                self._by_call[row["token"]] = found

    def note(self, event: wire.Event, registered: bool) -> None:
        """A registration (``registered``) or its end, from sofia's event."""
        call_id = event.get("call-id") or ""
        if not call_id:
            return
        found = address(event.get("network-ip"))
        if registered and found is not None:
            self._by_call[call_id] = found
        elif not registered:
            self._by_call.pop(call_id, None)

    def addresses(self) -> frozenset[str]:
        return frozenset(self._by_call.values())
