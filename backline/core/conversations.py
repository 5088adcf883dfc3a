"""Conversations: one outside party talking to one practice number, and who may see them.

A conversation's members are the number's members, always (derived from the
:class:`~backline.core.ownership.OwnershipBook` on every question, never copied), plus people added
to that conversation alone.  Only the latter can be removed.  Lookups are dict hits keyed by
(number, party), so their cost does not grow with the number of conversations.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from backline.core import e164
from backline.core.model import Carry
from backline.core.ownership import Assignee, OwnershipBook


class ConversationRefused(ValueError):
    """Nobody can be added to (or removed from) this conversation as asked; ``why`` says so."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class CannotRemoveNumberMember(ConversationRefused):
    """A number's members see all its conversations; remove them from the number instead."""

    def __init__(self, user_id: str, number: str) -> None:
        super().__init__(f"{user_id} is a member of {number} and sees all its conversations")
        self.user_id = user_id
        self.number = number


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """One conversation and one person in it, spelled as the book keys them (E.164)."""

    number: str
    party: str
    user_id: str


def addition(book: OwnershipBook, number: str, party: str, user_id: str) -> ConversationKey:
    """Who would be added to which conversation, checked against the directory; raises
    ConversationRefused (not a practice voice number, not a party's number, nobody active
    by that id, or already a member of the number, who sees all its conversations)."""
    key = _key(book, number, party, user_id)
    if user_id in book.members(key.number):
        raise ConversationRefused(f"{user_id} is a member of {key.number} and already sees "
                                  "all its conversations")
    return key


def removal(book: OwnershipBook, number: str, party: str, user_id: str) -> ConversationKey:
    """As :func:`addition`, for taking someone out: a member of the number cannot be
    (CannotRemoveNumberMember); a deactivated user can (their additions are void anyway)."""
    key = _key(book, number, party, user_id, active=False)
    if user_id in book.members(key.number):
        raise CannotRemoveNumberMember(user_id, key.number)
    return key


def _key(book: OwnershipBook, number: str, party: str, user_id: str, *,
         active: bool = True) -> ConversationKey:
    try:
        practice = e164.normalise(number)
    except e164.NotE164 as exc:
        raise ConversationRefused(f"the number is not {exc.why}") from None
    n = book.number(practice)
    if n is None or (Carry.VOICE not in n.carries and Carry.SMS not in n.carries):
        raise ConversationRefused(f"{practice} is not one of the practice's voice or SMS "
                                  "numbers")
    try:
        outside = e164.normalise(party)
    except e164.NotE164 as exc:
        raise ConversationRefused(f"the party is not {exc.why}") from None
    if book.number(outside) is not None:
        raise ConversationRefused(f"{outside} is a practice number, not an outside party")
    known = book.directory.user(user_id)
    if known is None or (active and not book.is_active(user_id)):
        raise ConversationRefused(f"no active user {user_id!r} in the directory")
    return ConversationKey(practice, outside, user_id)


@dataclass(frozen=True, slots=True)
class NewConversation:
    """What a conversation starts with: its tags and where it lands."""

    number: str
    party: str
    conversation_tags: tuple[str, ...]
    contact_tags: tuple[str, ...]
    assignee: Assignee


class ConversationBook:
    """People added to single conversations.  In-memory; the journal persists the changes.

    Kept small (bench.memory, 100,000 conversations): by number, then by party, each
    conversation's added people a tuple; the practice numbers and user ids, repeated in every
    entry, are one string each (interned) rather than one per row read from the journal."""

    def __init__(self) -> None:
        self._added: dict[str, dict[str, tuple[str, ...]]] = {}

    def __len__(self) -> int:
        return sum(len(parties) for parties in self._added.values())

    def hold(self, added: Iterable[ConversationKey | tuple[str, str, str]]) -> None:
        """Hold exactly ``added`` (the journal's list: keys, or (number, party, user id)
        rows), in place: the drivers share this book, so a change read from the journal is
        theirs at once.  Built aside and swapped in one step."""
        fresh: dict[str, dict[str, tuple[str, ...]]] = {}
        for k in added:
            number, party, user_id = (k.number, k.party, k.user_id) \
                if isinstance(k, ConversationKey) else k
            _put(fresh, number, party, user_id)
        self._added = fresh

    def add(self, number: str, party: str, user_id: str) -> None:
        _put(self._added, number, party, user_id)

    def remove(self, book: OwnershipBook, number: str, party: str, user_id: str) -> None:
        """Remove someone added to this conversation; a number member cannot be removed."""
        if user_id in book.members(number):
            raise CannotRemoveNumberMember(user_id, number)
        self.discard(number, party, user_id)

    def discard(self, number: str, party: str, user_id: str) -> None:
        """Forget ``user_id`` in this conversation as the journal did (a change read back)."""
        parties = self._added.get(number)
        if parties is None:
            return
        left = tuple(u for u in parties.get(party, ()) if u != user_id)
        if left:
            parties[party] = left
        else:
            parties.pop(party, None)
            if not parties:
                del self._added[number]

    def _of(self, number: str, party: str) -> tuple[str, ...]:
        parties = self._added.get(number)
        return parties.get(party, ()) if parties is not None else ()

    def added(self, book: OwnershipBook, number: str, party: str) -> frozenset[str]:
        """People added to this conversation alone who are still active."""
        return frozenset(u for u in self._of(number, party) if book.is_active(u))

    def is_added(self, book: OwnershipBook, number: str, party: str, user_id: str) -> bool:
        return user_id in self._of(number, party) and book.is_active(user_id)

    def may_use(self, book: OwnershipBook, number: str, party: str, user_id: str) -> bool:
        """Whether ``user_id`` may call or text ``party`` from ``number``: the number's
        members may, towards anyone; someone added to one conversation, towards that party
        only.  The one rule outbound calls and staff texts are both decided by."""
        return user_id in book.members(number) or self.is_added(book, number, party, user_id)

    def added_on(self, book: OwnershipBook, number: str, user_id: str) -> bool:
        """Whether ``user_id`` (active) was added to any conversation of ``number``."""
        return book.is_active(user_id) and any(
            user_id in who for who in self._added.get(number, {}).values())

    def members(self, book: OwnershipBook, number: str, party: str) -> frozenset[str]:
        """Everyone who sees the conversation: the number's members plus those added."""
        return book.members(number) | self.added(book, number, party)

    def numbers_for_party(self, book: OwnershipBook, user_id: str, party: str) -> tuple[str, ...]:
        """Numbers whose conversation with ``party`` ``user_id`` was added to, in book order."""
        return tuple(n.number for n in book.numbers
                     if self.is_added(book, n.number, party, user_id))


def _put(added: dict[str, dict[str, tuple[str, ...]]], number: str, party: str,
         user_id: str) -> None:
    parties = added.get(number)
    if parties is None:
        parties = added[sys.intern(number)] = {}
    now = parties.get(party, ())
    if user_id not in now:
        parties[party] = (*now, sys.intern(user_id))


def start_conversation(book: OwnershipBook, number: str, party: str) -> NewConversation:
    """Tags and assignee a new conversation (and a contact first seen through it) receives."""
    n = book.number(number)
    conversation_tags = n.conversation_tags if n else ()
    contact_tags = n.contact_tags if n else ()
    return NewConversation(number, party, conversation_tags, contact_tags, book.assignee(number))
