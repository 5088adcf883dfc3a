"""Asterisk's contact list as the driver reads it (``PJSIPShowContacts``), fed the fields an
Asterisk 22 answered with (recorded from the real one; the real exchange is in
tests/test_asterisk_registrations.py): which desk phone each contact rings as, and what is
never dialled."""

from __future__ import annotations

import logging

import pytest

from backline.core.connections import AsteriskPbx, HostPort, Secret
from backline.core.conversations import ConversationBook
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.core.routing import ring_set
from backline.pbx.asterisk.driver import AsteriskDriver
from tests.practice import directory, number, user

MAIN = "+13125550100"


def contact(aor: str, endpoint: str, uri: str, expires: str = "1796409041") -> dict[str, str]:
    """One ContactList event, with the fields Asterisk 22 sends (values shortened)."""
    return {"Event": "ContactList", "ObjectType": "contact",
            "ObjectName": f"{aor};@b921466294f648c221aeee2905f2545f", "ViaAddr": "127.0.0.1",
            "CallId": "1-16994@127.0.0.1", "Endpoint": endpoint, "ViaPort": "34923",
            "Uri": uri, "QualifyFrequency": "0", "UserAgent": "Yealink T54W",
            "ExpirationTime": expires, "Status": "NonQualified", "RoundtripUsec": "N/A"}


async def record(_: NewAttempt) -> None:
    return None


async def test_each_contact_rings_as_the_phone_that_registered_it(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backline.asterisk")
    book = OwnershipBook(directory([user("ana", phones=3), user("raj")], [], [number(MAIN)],
                                   max_per_login=2))
    pbx = AsteriskPbx(ami=HostPort("127.0.0.1", 1), ami_username="backline",
                      ami_secret=Secret(env="UNUSED"), agi=HostPort("127.0.0.1", 0),
                      sip=HostPort("127.0.0.1", 5060))
    driver = AsteriskDriver(pbx, "unused", book, ConversationBook(), lambda: Mode.NORMAL,
                            record)
    listing = [
        {"Response": "Success", "EventList": "start"},
        contact("ana", "ana-p2", "sip:ana@10.0.0.12:5060", "1796409100"),
        contact("ana", "ana-p1", "sip:ana@10.0.0.11:5060", "1796409000"),
        contact("carrier", "carrier", "sip:127.0.0.1:5070"),  # the trunk's static contact
        contact("raj", "ana-p0", "sip:raj@10.0.0.20:5060"),  # an endpoint not of raj's login
        contact("raj", "raj-p0", "sip:raj@10.0.0.21:5060&PJSIP/x"),  # would split the Dial
        {"Event": "ContactListComplete", "EventList": "Complete", "ListItems": "5"},
    ]
    driver.hold_contacts(listing)
    driver.hold_contacts(listing)  # read again after the next change: nothing new to say
    _, users, contacts = ring_set(book, driver.registrations, MAIN)
    assert users == ("ana", "raj")
    assert contacts == (("ana-p2", "sip:ana@10.0.0.12:5060"),  # newest first
                        ("ana-p1", "sip:ana@10.0.0.11:5060"),
                        ("raj-p0", "sip:raj@10.0.0.20:5060"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("desk phone ana-p2 registered (login ana now holds 2 of 2)") == 1
    assert lines.count("a desk phone of raj registered a contact we will not dial") == 1
    assert lines.count("a contact of raj has no desk phone of that login as its endpoint; "
                       "it rings as raj-p0") == 1
    driver.hold_contacts(listing[:2])  # Asterisk dropped ana-p1 and raj's contacts
    assert ring_set(book, driver.registrations, MAIN)[2] == (
        ("ana-p2", "sip:ana@10.0.0.12:5060"),)
    assert "desk phone ana-p1 is no longer registered (login ana now holds 1 of 2)" in \
        caplog.text
    await driver.stop()
