"""Asterisk's desk-phone contacts (a ``PJSIPShowContacts`` answer) as the registrations that
ring.  Pure: the listing in, the registrations and what is odd about them out.

Each ``ContactList`` event is one contact: ``ObjectName`` is ``AOR;@hash`` (the AOR is the
login), ``Endpoint`` the desk phone whose REGISTER made it, ``Uri`` the contact,
``ExpirationTime`` when Asterisk lets it go (epoch seconds; a refresh moves it on; past
``max_contacts`` Asterisk removes the one that expires soonest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registration

# PJSIPShowContacts answers an error, with this message, when no contact is registered at all.
NO_CONTACTS = "No Contacts found"
# A contact we will put into a Dial string: nothing that could split it (&, comma) or quote.
# A parameter may hold an address and port: Asterisk keeps a NAT-rewritten contact's
# original one as x-ast-orig-host=192.168.1.10:5060.
_SAFE_CONTACT = re.compile(r"sips?:[A-Za-z0-9._~+-]+@[A-Za-z0-9.\[\]:-]+(;[A-Za-z0-9=._:-]+)*")

# (login, contact) -> what is odd about it, for a warning said once, not at every read.
Odd = dict[tuple[str, str], str]


def desk_phone_contacts(book: OwnershipBook, listing: Iterable[Mapping[str, str]]
                        ) -> tuple[list[Registration], Odd]:
    """The desk phones' contacts in ``listing`` (the carrier's static contact and logins no
    longer provisioned left out), and the contacts that are odd: one we will not dial is
    left out, one without a desk phone of its login rings under the login's first phone."""
    held: list[Registration] = []
    odd: Odd = {}
    for e in listing:
        if e.get("Event") != "ContactList":
            continue
        user = e.get("ObjectName", "").partition(";@")[0]
        uri, endpoint = e.get("Uri", ""), e.get("Endpoint", "")
        phones = book.desk_phones(user)
        if not book.is_active(user) or not phones:
            continue  # the carrier's static contact, or a login no longer provisioned
        if not _SAFE_CONTACT.fullmatch(uri):
            odd[user, uri] = f"a desk phone of {user} registered a contact we will not dial"
            continue
        phone = endpoint if endpoint in phones else None
        if phone is None:
            # Asterisk 22 records the registering endpoint; a contact without one (made by
            # hand, or an older Asterisk) still rings, under the login's first phone.
            odd[user, uri] = (f"a contact of {user} has no desk phone of that login as its "
                              f"endpoint; it rings as {phones[0]}")
            phone = phones[0]
        try:
            expires = float(e.get("ExpirationTime", "0") or 0)
        except ValueError:
            expires = 0.0
        held.append(Registration(expires, phone, uri))
    return held, odd
