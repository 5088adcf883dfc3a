"""Who may see which number: the members of each number, derived from owners and teams.

An :class:`OwnershipBook` is built once from a :class:`~backline.core.model.Directory` and answers
in O(1).  Membership is always *derived* from the directory (owner expanded, plus additional
members, minus deactivated users) and never copied into conversations, so a change of owner
or members reaches every existing conversation the moment a new book is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from backline.core.model import Carry, Directory, Hours, Number, OwnerKind, Party


@dataclass(frozen=True, slots=True)
class Assignee:
    """Where a new conversation lands: a user's or team's queue, or the shared inbox (None)."""

    party: Party | None


class OwnershipBook:
    """Members, desk phones and numbers of one practice, indexed for the hot path."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        active = {u.id for u in directory.users if u.active}
        teams = {t.id: frozenset(m for m in t.members if m in active) for t in directory.teams}
        self._numbers: Mapping[str, Number] = MappingProxyType(
            {n.number: n for n in directory.numbers})
        members: dict[str, frozenset[str]] = {}
        for n in directory.numbers:
            who = _expand(n.owner, active, teams)
            for extra in n.members:
                who |= _expand(extra, active, teams)
            members[n.number] = frozenset(who)
        self._members: Mapping[str, frozenset[str]] = MappingProxyType(members)
        self._sorted_members: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {n: tuple(sorted(who)) for n, who in members.items()})
        voice: dict[str, list[str]] = {}
        for n in directory.numbers:
            if Carry.VOICE in n.carries:
                for user in members[n.number]:
                    voice.setdefault(user, []).append(n.number)
        self._voice_numbers: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {u: tuple(ns) for u, ns in voice.items()})
        self._desk_phones: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {u.id: u.desk_phones for u in directory.users if u.active})
        self._phone_owner: Mapping[str, str] = MappingProxyType(
            {p: u.id for u in directory.users if u.active for p in u.desk_phones})
        self._active = frozenset(active)
        # Extensions of active users and of teams (the loader refuses clashes); a deactivated
        # user's extension is nobody's.
        extensions: dict[str, Party] = {t.extension: Party(OwnerKind.TEAM, t.id)
                                        for t in directory.teams if t.extension}
        extensions.update({u.extension: Party(OwnerKind.USER, u.id)
                           for u in directory.users if u.active and u.extension})
        self._extensions: Mapping[str, Party] = MappingProxyType(extensions)
        self._team_members: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {tid: tuple(sorted(who)) for tid, who in teams.items()})

    def take_over(self, other: OwnershipBook) -> None:
        """Answer from now on as ``other`` does (a live reload of the practice).

        In place, in one step with no ``await``: every holder of this book (the call path,
        the features, the desk-phone admin) sees the new practice at once, and a call decided
        before the step keeps the decision it was given."""
        vars(self).update(vars(other))  # every index, a new one included

    def number(self, e164: str) -> Number | None:
        return self._numbers.get(e164)

    def hours_of(self, e164: str) -> Hours | None:
        """As ``Directory.hours_of`` (its own hours, else the practice's), by a dict hit:
        the directory scans its numbers, 500 of them in bench.core."""
        number = self._numbers.get(e164)
        return (number.hours if number is not None else None) or self.directory.hours

    @property
    def numbers(self) -> Iterable[Number]:
        return self._numbers.values()

    def members(self, e164: str) -> frozenset[str]:
        """User ids that may see ``e164``: empty for an unknown number."""
        return self._members.get(e164, frozenset())

    def sorted_members(self, e164: str) -> tuple[str, ...]:
        """The same members, sorted once at build time so that ringing order is stable."""
        return self._sorted_members.get(e164, ())

    def voice_numbers_of(self, user_id: str) -> tuple[str, ...]:
        """Voice numbers ``user_id`` may call out from, in directory order (first: default)."""
        return self._voice_numbers.get(user_id, ())

    def is_active(self, user_id: str) -> bool:
        return user_id in self._active

    def desk_phones(self, user_id: str) -> tuple[str, ...]:
        """Desk phones of an active user; a deactivated user has none that ring or call."""
        return self._desk_phones.get(user_id, ())

    def user_of_phone(self, desk_phone: str) -> str | None:
        """The active user a desk phone belongs to, or None (unknown or deactivated)."""
        return self._phone_owner.get(desk_phone)

    def extension(self, digits: str) -> Party | None:
        """Whose extension ``digits`` is: an active user's, a team's, or nobody's (None)."""
        return self._extensions.get(digits)

    def team_members(self, team_id: str) -> tuple[str, ...]:
        """The active members of a team, sorted (a ring group rings them in this order)."""
        return self._team_members.get(team_id, ())

    def numbers_of(self, user_id: str) -> tuple[str, ...]:
        """Numbers ``user_id`` is a member of, in directory order."""
        return tuple(n for n, who in self._members.items() if user_id in who)

    def assignee(self, e164: str) -> Assignee:
        """Auto-assign target for a new conversation on ``e164``."""
        number = self._numbers.get(e164)
        if number is None or not number.auto_assign or number.owner.kind is OwnerKind.PRACTICE:
            return Assignee(None)
        return Assignee(number.owner)


def _expand(party: Party, active: frozenset[str] | set[str],
            teams: Mapping[str, frozenset[str]]) -> set[str]:
    if party.kind is OwnerKind.PRACTICE:
        return set(active)
    if party.kind is OwnerKind.TEAM:
        return set(teams.get(party.id, ()))
    return {party.id} if party.id in active else set()
