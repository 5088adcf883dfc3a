"""Properties over random practices: the guarantees a practice relies on, whatever its shape."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from backline.core.conversations import ConversationBook
from backline.core.decisions import (
    InboundCall,
    OutboundCall,
    PlaceCall,
    PlaceEmergencyCall,
    RefuseOutbound,
    RingDeskPhones,
    RingExtension,
)
from backline.core.model import PRACTICE, Carry, Party, Team
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import decide_outbound, route_inbound
from tests.practice import directory, number, t, u, user

EXAMPLES = settings(max_examples=500, deadline=None)
PARTY = "+17205550141"


@dataclass
class World:
    book: OwnershipBook
    registrations: Registrations
    conversations: ConversationBook
    phones: list[str]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_users = draw(st.integers(1, 10))
    users = [replace(user(f"u{i}", active=draw(st.booleans()), phones=draw(st.integers(0, 3))),
                     extension=f"{100 + i}")
             for i in range(n_users)]
    ids = [x.id for x in users]
    teams = [Team(f"t{i}", f"T{i}", tuple(draw(st.lists(st.sampled_from(ids), unique=True))),
                  extension=f"{200 + i}")
             for i in range(draw(st.integers(0, 4)))]
    parties: list[Party] = [u(i) for i in ids] + [t(x.id) for x in teams]
    numbers = []
    for i in range(draw(st.integers(1, 6))):
        owner = draw(st.sampled_from([PRACTICE, *parties]))
        extra = tuple(draw(st.lists(st.sampled_from(parties), unique=True, max_size=3)))
        carries = tuple(draw(st.sets(st.sampled_from(list(Carry)), min_size=1)))
        numbers.append(number(f"+1312555{i:04d}", owner, extra, carries=carries))
    book = OwnershipBook(directory(users, teams, numbers,
                                   max_per_login=draw(st.integers(1, 3))))
    regs = Registrations(book, book.directory.max_per_login)
    phones = [p for x in users for p in x.desk_phones]
    for i, phone in enumerate(draw(st.lists(st.sampled_from(phones), unique=True))
                              if phones else []):
        regs.register(phone, f"c{i}", at=draw(st.floats(0, 1e6)))
    conversations = ConversationBook()
    for _ in range(draw(st.integers(0, 5))):
        conversations.add(draw(st.sampled_from(numbers)).number, PARTY, draw(st.sampled_from(ids)))
    return World(book, regs, conversations, phones)


def owner_of(world: World, phone: str) -> str:
    return next(x.id for x in world.book.directory.users if phone in x.desk_phones)


def active(world: World, uid: str) -> bool:
    return next(x.active for x in world.book.directory.users if x.id == uid)


@EXAMPLES
@given(worlds(), st.sampled_from(list(Mode)))
def test_no_non_member_and_no_deactivated_user_ever_rings(world: World, mode: Mode) -> None:
    for n in world.book.directory.numbers:
        decision = route_inbound(world.book, world.registrations,
                                 InboundCall(n.number, PARTY), mode, 25)
        if not isinstance(decision, RingDeskPhones):
            continue
        members = world.book.members(n.number)
        assert decision.desk_phones, "an empty ring set must go to voicemail instead"
        for phone in decision.desk_phones:
            who = owner_of(world, phone)
            assert who in members
            assert active(world, who)
        assert mode is Mode.NORMAL


@EXAMPLES
@given(worlds())
def test_every_member_with_a_live_phone_rings(world: World) -> None:
    for n in world.book.directory.numbers:
        if Carry.VOICE not in n.carries:
            continue
        decision = route_inbound(world.book, world.registrations,
                                 InboundCall(n.number, PARTY), Mode.NORMAL, 25)
        rung = set(decision.desk_phones) if isinstance(decision, RingDeskPhones) else set()
        for member in world.book.members(n.number):
            assert set(world.registrations.live(member)) <= rung


@EXAMPLES
@given(worlds(), st.sampled_from(list(Mode)), st.data())
def test_calls_out_only_from_numbers_the_user_may_use(world: World, mode: Mode,
                                                      data: st.DataObject) -> None:
    if not world.phones:
        return
    phone = data.draw(st.sampled_from(world.phones))
    nums = [n.number for n in world.book.directory.numbers]
    from_number = data.draw(st.one_of(st.none(), st.sampled_from(nums)))
    decision = decide_outbound(world.book, world.conversations,
                               OutboundCall(phone, PARTY, from_number), mode)
    who = owner_of(world, phone)
    if isinstance(decision, PlaceCall):
        assert mode is Mode.NORMAL
        assert active(world, who), "a deactivated user never calls out"
        assert who in world.book.members(decision.from_number) or \
            world.conversations.is_added(world.book, decision.from_number, PARTY, who)
        if from_number is not None:
            assert decision.from_number == from_number


@EXAMPLES
@given(worlds(), st.sampled_from(list(Mode)), st.data())
def test_911_is_never_refused(world: World, mode: Mode, data: st.DataObject) -> None:
    phone = data.draw(st.one_of(st.sampled_from(world.phones) if world.phones else st.nothing(),
                                st.text(max_size=12)))
    from_number = data.draw(st.one_of(st.none(), st.text(max_size=16)))
    decision = decide_outbound(world.book, world.conversations,
                               OutboundCall(phone, "911", from_number), mode)
    assert isinstance(decision, PlaceEmergencyCall)


@EXAMPLES
@given(worlds(), st.sampled_from(list(Mode)))
def test_an_extension_rings_exactly_its_live_people_and_never_the_caller(
        world: World, mode: Mode) -> None:
    d = world.book.directory
    for phone in world.phones:
        caller = owner_of(world, phone)
        for ext in [x.extension for x in d.users] + [x.extension for x in d.teams] + ["999"]:
            decision = decide_outbound(world.book, world.conversations,
                                       OutboundCall(phone, ext), mode,
                                       registrations=world.registrations)
            team = next((x for x in d.teams if x.extension == ext), None)
            if team is not None:
                people = {m for m in team.members if active(world, m) and m != caller}
            else:
                people = {x.id for x in d.users if x.extension == ext and active(world, x.id)}
            if not active(world, caller):
                assert not isinstance(decision, RingExtension)
                continue
            live = {(r.desk_phone, r.contact) for who in people
                    for r in world.registrations.live_registrations(who)
                    if r.desk_phone != phone}
            if live:
                assert isinstance(decision, RingExtension)
                assert set(decision.contacts) == live  # every live phone, nobody else's
                assert phone not in decision.desk_phones
            else:
                assert isinstance(decision, RefuseOutbound)
