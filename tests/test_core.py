"""The pure core, table by table: members, conversations, tags, ringing, calling out."""

from __future__ import annotations

import dataclasses

import pytest

from backline.core.conversations import (
    CannotRemoveNumberMember,
    ConversationBook,
    start_conversation,
)
from backline.core.decisions import (
    CallKind,
    FaxRefusal,
    InboundCall,
    OpenVoicemail,
    OutboundCall,
    PlaceCall,
    PlaceEmergencyCall,
    PlayAnnouncement,
    ReceiveFax,
    Refusal,
    RefuseOutbound,
    RefuseUnknownNumber,
    RejectFax,
    RingDeskPhones,
    RingExtension,
    SendToVoicemail,
)
from backline.core.dialling import dialled
from backline.core.model import Carry, OwnerKind, Team
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registration, Registrations
from backline.core.routing import decide_outbound, route_inbound
from tests.practice import directory, number, t, u, user

MAIN, DIRECT, SCHED, FAX = "+13125550100", "+13125550101", "+13125550102", "+13125550109"


def practice() -> OwnershipBook:
    return OwnershipBook(directory(
        [user("ana"), user("raj"), user("sam"), user("jo"), user("lee"),
         user("old", active=False)],
        [Team("front", "Front", ("sam", "jo", "old")), Team("nurses", "Nurses", ("lee",))],
        [number(MAIN, caller_id_name="Maple Street"),
         number(DIRECT, u("ana"), (t("nurses"),), auto_assign=True, tags=("dr-lee",),
                caller_id_name="Dr Ana Lee"),
         number(SCHED, t("front"), (u("raj"), u("old")), carries=(Carry.VOICE, Carry.SMS),
                tags=("sched",), contact_tags=("new-patient",), auto_assign=True),
         number(FAX, t("front"), carries=(Carry.FAX,))]))


@pytest.mark.parametrize(("num", "members"), [
    (MAIN, {"ana", "raj", "sam", "jo", "lee"}),  # practice-owned: every active user
    (DIRECT, {"ana", "lee"}),                    # user owner + team as extra members
    (SCHED, {"sam", "jo", "raj"}),                # team owner + extra user; "old" is nobody's
    ("+19995550000", set()),
])
def test_members_of_a_number(num: str, members: set[str]) -> None:
    assert practice().members(num) == members


def test_conversation_members_are_derived_live_from_the_number() -> None:
    book = practice()
    conversations = ConversationBook()
    conversations.add(SCHED, "+17205550141", "ana")
    assert conversations.members(book, SCHED, "+17205550141") == {"sam", "jo", "raj", "ana"}
    assert conversations.members(book, SCHED, "+17205550199") == {"sam", "jo", "raj"}
    # Change the number's owner: the existing conversation follows at once.
    d = book.directory
    moved = dataclasses.replace(d, numbers=tuple(
        dataclasses.replace(n, owner=u("lee"), members=()) if n.number == SCHED else n
        for n in d.numbers))
    book2 = OwnershipBook(moved)
    assert conversations.members(book2, SCHED, "+17205550141") == {"lee", "ana"}


def test_number_members_cannot_be_removed_from_a_conversation_but_added_people_can() -> None:
    book = practice()
    conversations = ConversationBook()
    conversations.add(SCHED, "+17205550141", "ana")
    with pytest.raises(CannotRemoveNumberMember):
        conversations.remove(book, SCHED, "+17205550141", "sam")
    conversations.remove(book, SCHED, "+17205550141", "ana")
    assert "ana" not in conversations.members(book, SCHED, "+17205550141")


def test_new_conversation_gets_tags_and_auto_assignee() -> None:
    book = practice()
    new = start_conversation(book, SCHED, "+17205550141")
    assert new.conversation_tags == ("sched",)
    assert new.contact_tags == ("new-patient",)
    assert new.assignee.party == t("front")
    assert start_conversation(book, MAIN, "+17205550141").assignee.party is None
    direct = start_conversation(book, DIRECT, "+17205550141").assignee.party
    assert direct is not None and direct.kind is OwnerKind.USER and direct.id == "ana"


def registered(book: OwnershipBook, *phones: str) -> Registrations:
    regs = Registrations(book, book.directory.max_per_login)
    for i, phone in enumerate(phones):
        regs.register(phone, f"sip:{phone}@127.0.0.1:{5000 + i}", at=float(i))
    return regs


@pytest.mark.parametrize(("dialed", "mode", "kind", "expected"), [
    ("(312) 555-0101", Mode.NORMAL, CallKind.VOICE,
     RingDeskPhones(DIRECT, ("ana-p0", "lee-p0"), ("ana", "lee"),
                    (("ana-p0", "sip:ana-p0@127.0.0.1:5000"),
                     ("lee-p0", "sip:lee-p0@127.0.0.1:5004")), 25, "3125550101")),
    (SCHED, Mode.NORMAL, CallKind.VOICE,
     RingDeskPhones(SCHED, ("jo-p0", "raj-p0", "sam-p0"), ("jo", "raj", "sam"),
                    (("jo-p0", "sip:jo-p0@127.0.0.1:5003"), ("raj-p0", "sip:raj-p0@127.0.0.1:5001"),
                     ("sam-p0", "sip:sam-p0@127.0.0.1:5002")), 25, "3125550102")),
    (DIRECT, Mode.OUTAGE, CallKind.VOICE, PlayAnnouncement(DIRECT)),
    ("+19995550000", Mode.NORMAL, CallKind.VOICE, RefuseUnknownNumber("+19995550000")),
    ("not a number", Mode.NORMAL, CallKind.VOICE, RefuseUnknownNumber("not a number")),
    (FAX, Mode.NORMAL, CallKind.VOICE, ReceiveFax(FAX)),
    (FAX, Mode.OUTAGE, CallKind.FAX, ReceiveFax(FAX)),
    (DIRECT, Mode.NORMAL, CallKind.FAX, RejectFax(DIRECT, FaxRefusal.NOT_A_FAX_NUMBER)),
])
def test_inbound_routing(dialed: str, mode: Mode, kind: CallKind, expected: object) -> None:
    book = practice()
    regs = registered(book, "ana-p0", "raj-p0", "sam-p0", "jo-p0", "lee-p0", "old-p0")
    assert route_inbound(book, regs, InboundCall(dialed, "+17205550141", kind), mode, 25) \
        == expected


def test_nobody_registered_goes_straight_to_voicemail() -> None:
    book = practice()
    decision = route_inbound(book, registered(book, "raj-p0"), InboundCall(DIRECT, "x"),
                             Mode.NORMAL, 25)
    assert decision == SendToVoicemail(DIRECT, "3125550101")


def test_login_over_the_device_limit_drops_the_oldest_registration() -> None:
    book = OwnershipBook(directory([user("ana", phones=4)], [], [number(MAIN)], max_per_login=2))
    regs = Registrations(book, 2)
    assert regs.register("ana-p0", "c0", at=1.0) == ()
    assert regs.register("ana-p1", "c1", at=2.0) == ()
    dropped = regs.register("ana-p2", "c2", at=3.0)
    assert [r.desk_phone for r in dropped] == ["ana-p0"]
    assert regs.live("ana") == ("ana-p1", "ana-p2")
    regs.unregister("ana-p2")
    assert regs.live("ana") == ("ana-p1",)


def test_a_mirrored_login_holds_exactly_what_the_pbx_lists() -> None:
    # The PBX enforces the limit and chooses whom to drop (Asterisk: the registration that
    # expires soonest, so a refresh counts); the controller holds its list as it is.
    book = OwnershipBook(directory([user("ana", phones=3), user("old", active=False)], [],
                                   [number(MAIN)], max_per_login=2))
    regs = Registrations(book, 2)
    a, b, c = (Registration(at, f"ana-p{i}", f"sip:ana@10.0.0.{i}")
               for i, at in enumerate((100.0, 200.0, 300.0)))
    assert regs.mirror([a, b, Registration(1.0, "old-p0", "sip:old@10.0.0.9")]) == ((a, b), ())
    assert regs.live("ana") == ("ana-p0", "ana-p1")
    refreshed = dataclasses.replace(a, at=400.0)
    assert regs.mirror([refreshed, c]) == ((c,), (b,))  # b, not the refreshed a, was dropped
    assert regs.live_registrations("ana") == (refreshed, c)  # newest (latest expiry) first
    assert regs.mirror([a, b, c]) == ((b,), ())  # three listed: three ring, none guessed away
    assert regs.live("ana") == ("ana-p0", "ana-p1", "ana-p2")
    assert regs.mirror([]) == ((), (a, b, c))
    assert regs.live("ana") == ()


OUT = "+17205550141"


def test_a_number_rings_whoever_is_registered_and_a_member_now() -> None:
    # Ring sets are kept between calls (bench.core): each change below must show at once.
    book = practice()
    regs = registered(book, "sam-p0")
    sam = ("sam-p0", "sip:sam-p0@127.0.0.1:5000")

    def rings(dialed: str) -> tuple[tuple[str, str], ...]:
        decision = route_inbound(book, regs, InboundCall(dialed, OUT), Mode.NORMAL, 25)
        return decision.contacts if isinstance(decision, RingDeskPhones) else ()

    assert rings(SCHED) == (sam,)
    regs.register("raj-p0", "sip:raj-p0", at=2.0)
    assert rings(SCHED) == (("raj-p0", "sip:raj-p0"), sam)
    regs.register("raj-p0", "sip:raj-p0-moved", at=3.0)  # a second contact, newest first
    assert rings(SCHED)[:2] == (("raj-p0", "sip:raj-p0-moved"), ("raj-p0", "sip:raj-p0"))
    regs.unregister("raj-p0")
    assert rings(SCHED) == (sam,)
    regs.mirror([Registration(5.0, "jo-p0", "sip:jo-p0")])
    assert rings(SCHED) == (("jo-p0", "sip:jo-p0"),)
    # A reload that hands the number to Raj alone: Jo's phone no longer rings for it.
    book.take_over(OwnershipBook(dataclasses.replace(book.directory, numbers=tuple(
        dataclasses.replace(n, owner=u("raj"), members=()) if n.number == SCHED else n
        for n in book.directory.numbers))))
    assert rings(SCHED) == ()
    regs.register("raj-p0", "sip:raj-p0", at=6.0)
    assert rings(SCHED) == (("raj-p0", "sip:raj-p0"),)


@pytest.mark.parametrize(("call", "mode", "expected"), [
    (OutboundCall("sam-p0", OUT, SCHED), Mode.NORMAL, PlaceCall(SCHED, "", OUT)),
    (OutboundCall("ana-p0", "(720) 555-0141", DIRECT), Mode.NORMAL,
     PlaceCall(DIRECT, "Dr Ana Lee", OUT)),
    (OutboundCall("ana-p0", OUT), Mode.NORMAL, PlaceCall(MAIN, "Maple Street", OUT)),
    (OutboundCall("sam-p0", OUT, DIRECT), Mode.NORMAL, RefuseOutbound(Refusal.NOT_A_MEMBER)),
    (OutboundCall("sam-p0", OUT, FAX), Mode.NORMAL,
     RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)),
    (OutboundCall("sam-p0", OUT, "+19995550000"), Mode.NORMAL,
     RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)),
    (OutboundCall("old-p0", OUT, SCHED), Mode.NORMAL,
     RefuseOutbound(Refusal.UNKNOWN_DESK_PHONE)),
    (OutboundCall("sam-p0", "12", SCHED), Mode.NORMAL,
     RefuseOutbound(Refusal.INVALID_DESTINATION)),
    (OutboundCall("sam-p0", OUT, SCHED), Mode.OUTAGE, RefuseOutbound(Refusal.OUTAGE)),
    (OutboundCall("sam-p0", "911", SCHED), Mode.OUTAGE, PlaceEmergencyCall("911", SCHED)),
    (OutboundCall("old-p0", "911"), Mode.OUTAGE, PlaceEmergencyCall("911", "")),
    (OutboundCall("stranger", "911"), Mode.NORMAL, PlaceEmergencyCall("911", "")),
    (OutboundCall("sam-p0", "*97"), Mode.NORMAL, OpenVoicemail(MAIN, "3125550100")),
    (OutboundCall("lee-p0", "*97" + DIRECT[2:]), Mode.NORMAL,
     OpenVoicemail(DIRECT, "3125550101")),
    (OutboundCall("sam-p0", "*97" + DIRECT[2:]), Mode.NORMAL,
     RefuseOutbound(Refusal.NOT_A_MEMBER)),
    (OutboundCall("sam-p0", "*97" + FAX[2:]), Mode.NORMAL,
     RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)),
])
def test_outbound_decisions(call: OutboundCall, mode: Mode, expected: object) -> None:
    assert decide_outbound(practice(), ConversationBook(), call, mode) == expected


@pytest.mark.parametrize(("digits", "expected"), [
    ("+17205550141", OutboundCall("p", "+17205550141")),
    ("7205550141", OutboundCall("p", "7205550141")),
    ("*731255501017205550141", OutboundCall("p", "7205550141", "+13125550101")),
    ("*73125550101", OutboundCall("p", "*73125550101")),  # no destination: not a choice
    ("911", OutboundCall("p", "911")),
])
def test_what_a_desk_phone_dialled(digits: str, expected: OutboundCall) -> None:
    assert dialled("p", digits) == expected


def test_added_to_one_conversation_may_call_only_that_party() -> None:
    book = practice()
    conversations = ConversationBook()
    conversations.add(DIRECT, OUT, "sam")
    assert decide_outbound(book, conversations, OutboundCall("sam-p0", OUT, DIRECT),
                           Mode.NORMAL) == PlaceCall(DIRECT, "Dr Ana Lee", OUT)
    assert decide_outbound(book, conversations, OutboundCall("sam-p0", "+17205550199", DIRECT),
                           Mode.NORMAL) == RefuseOutbound(Refusal.NOT_A_MEMBER)


def extensions() -> OwnershipBook:
    """The practice above with extensions: each user's, a team's (front: sam, jo and the
    deactivated old), and one for a team nobody active is in; sam has a second phone."""
    d = practice().directory
    ext = {"ana": "101", "raj": "102", "sam": "111", "jo": "112", "lee": "120", "old": "130"}
    return OwnershipBook(dataclasses.replace(
        d, users=tuple(dataclasses.replace(
            x, extension=ext[x.id],
            desk_phones=("sam-p0", "sam-p1") if x.id == "sam" else x.desk_phones)
            for x in d.users),
        teams=(dataclasses.replace(d.teams[0], extension="200"),
               dataclasses.replace(d.teams[1], extension="300"),
               Team("gone", "Gone", ("old",), extension="400"))))


def ring(ext: str, *phones: str) -> RingExtension:
    """Sam (111, on sam-p0) calling ``ext``, which rings ``phones``."""
    return RingExtension(ext, "Sam", "111", phones, tuple(p.split("-")[0] for p in phones),
                         tuple((p, f"sip:{p}@127.0.0.1:{5000 + REG.index(p)}") for p in phones),
                         25)


REG = ("ana-p0", "raj-p0", "sam-p0", "jo-p0", "lee-p0", "old-p0", "sam-p1")


@pytest.mark.parametrize(("call", "mode", "expected"), [
    # A colleague's extension rings their desk phone, in every mode (never the carrier).
    (OutboundCall("sam-p0", "101"), Mode.NORMAL, ring("101", "ana-p0")),
    (OutboundCall("sam-p0", "101"), Mode.OUTAGE, ring("101", "ana-p0")),
    # A number chosen with *7 means nothing to an internal call.
    (OutboundCall("sam-p0", "102", SCHED), Mode.NORMAL, ring("102", "raj-p0")),
    # A team's extension: its active members at once, never the caller's own phone.
    (OutboundCall("sam-p0", "200"), Mode.NORMAL, ring("200", "jo-p0")),
    (OutboundCall("sam-p0", "300"), Mode.OUTAGE, ring("300", "lee-p0")),
    # Nobody there: a team with no active member, a deactivated user's old extension.
    (OutboundCall("sam-p0", "400"), Mode.NORMAL, RefuseOutbound(Refusal.NOBODY_REGISTERED)),
    (OutboundCall("sam-p0", "130"), Mode.NORMAL, RefuseOutbound(Refusal.INVALID_DESTINATION)),
    # An extension that is nobody's: the short refusal, in both modes.
    (OutboundCall("sam-p0", "199"), Mode.NORMAL, RefuseOutbound(Refusal.INVALID_DESTINATION)),
    (OutboundCall("sam-p0", "199"), Mode.OUTAGE, RefuseOutbound(Refusal.INVALID_DESTINATION)),
    # Not extension-shaped, or from a phone that is nobody's: the rules as before.
    (OutboundCall("sam-p0", "0101"), Mode.NORMAL, RefuseOutbound(Refusal.INVALID_DESTINATION)),
    (OutboundCall("old-p0", "101"), Mode.NORMAL, RefuseOutbound(Refusal.UNKNOWN_DESK_PHONE)),
    (OutboundCall("old-p0", "101"), Mode.OUTAGE, RefuseOutbound(Refusal.OUTAGE)),
    (OutboundCall("sam-p0", "911"), Mode.NORMAL, PlaceEmergencyCall("911", MAIN)),
])
def test_extension_calls(call: OutboundCall, mode: Mode, expected: object) -> None:
    book = extensions()
    regs = registered(book, *REG[:6])
    regs.register("sam-p1", "sip:sam-p1@127.0.0.1:5006", at=6.0)
    assert decide_outbound(book, ConversationBook(), call, mode, registrations=regs) == expected


def test_a_users_other_phones_ring_when_they_dial_their_own_extension() -> None:
    book = extensions()
    regs = registered(book, *REG)
    decision = decide_outbound(book, ConversationBook(), OutboundCall("sam-p0", "111"),
                               Mode.NORMAL, registrations=regs)
    assert decision == ring("111", "sam-p1")
    nobody = decide_outbound(book, ConversationBook(), OutboundCall("sam-p0", "101"),
                             Mode.NORMAL, registrations=registered(book, "sam-p0"))
    assert nobody == RefuseOutbound(Refusal.NOBODY_REGISTERED)
