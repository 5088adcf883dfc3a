"""Which desk phones are registered, and which of them ring: a login holds at most
``max_per_login`` registrations, the newest."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backline.core.ownership import OwnershipBook

RingSet = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]
"""Desk phones to ring, their users, and the (desk phone, contact) pairs: see ring_set."""


@dataclass(frozen=True, slots=True, order=True)
class Registration:
    """One registered contact of a desk phone; ``at`` orders them (newest wins): when it
    registered, or when the PBX will let it expire (a refresh moves that on)."""

    at: float
    desk_phone: str
    contact: str = field(default="", compare=False)


class Registrations:
    """Live desk-phone registrations, capped per login (user) at ``max_per_login``.

    A login may hold at most ``max_per_login`` registrations at once; past that the oldest
    is dropped, so a phone left logged in on a borrowed desk stops ringing.  Fed one event at
    a time (``register``/``unregister``) the limit is applied here; fed the PBX's whole list
    (``mirror``) the PBX has applied it.  The per-user view is recomputed on each change (rare)
    so that ringing (every call) is a few dict lookups, and each number's ring set is kept
    until a ringing contact changes: a number the whole practice owns rings ~200 people, and
    building that set on every call made it the slowest 2% of decisions (bench.core).
    """

    def __init__(self, book: OwnershipBook, max_per_login: int) -> None:
        self._book = book
        self._max = max_per_login
        self._by_phone: dict[str, dict[str, Registration]] = {}
        self._live: dict[str, tuple[str, ...]] = {}
        self._kept: dict[str, tuple[Registration, ...]] = {}
        self._pairs: dict[str, tuple[tuple[str, str], ...]] = {}
        self._ring_sets: dict[str, tuple[tuple[str, ...], RingSet]] = {}

    def register(self, desk_phone: str, contact: str, at: float) -> tuple[Registration, ...]:
        """Record a registration; return the registrations it pushed past the login's limit."""
        user = self._book.user_of_phone(desk_phone)
        if user is None:
            return ()
        self._by_phone.setdefault(desk_phone, {})[contact] = Registration(at, desk_phone, contact)
        return self._recompute(user)

    def unregister(self, desk_phone: str, contact: str | None = None) -> None:
        """Forget one contact of a desk phone, or all of them when ``contact`` is None."""
        contacts = self._by_phone.get(desk_phone)
        if contacts is None:
            return
        if contact is None:
            contacts.clear()
        else:
            contacts.pop(contact, None)
        user = self._book.user_of_phone(desk_phone)
        if user is not None:
            self._recompute(user)

    def mirror(self, held: Iterable[Registration]
               ) -> tuple[tuple[Registration, ...], tuple[Registration, ...]]:
        """Hold exactly ``held``: every registration the PBX lists now, each under the desk
        phone that registered it; registrations of unknown desk phones are left out.

        Nothing is dropped for the login limit here: a PBX that enforces it (Asterisk's
        ``max_contacts``) removes the registration it chooses and lists the rest, and a
        controller that guessed its choice came to ring a different phone from the one it
        kept.  Returns (added, removed), each sorted by (desk phone, contact), for the log.
        """
        before = {(r.desk_phone, r.contact): r
                  for contacts in self._by_phone.values() for r in contacts.values()}
        by_phone: dict[str, dict[str, Registration]] = {}
        for r in held:
            if self._book.user_of_phone(r.desk_phone) is not None:
                by_phone.setdefault(r.desk_phone, {})[r.contact] = r
        self._by_phone = by_phone
        after = {(r.desk_phone, r.contact): r
                 for contacts in by_phone.values() for r in contacts.values()}
        users = {self._book.user_of_phone(phone) for phone, _ in before.keys() | after}
        # A login deactivated by a reload owns no phone any more: its view is emptied too.
        users |= {u for u, live in self._live.items() if live and not self._book.is_active(u)}
        for user in users:
            if user is not None:
                self._recompute(user, capped=False)
        return (tuple(after[k] for k in sorted(after.keys() - before.keys())),
                tuple(before[k] for k in sorted(before.keys() - after.keys())))

    def contact_hosts(self) -> frozenset[str]:
        """The addresses desk phones are registered from now (the host of each contact URI,
        which Asterisk rewrites to the source behind NAT): a ban must never cut one off."""
        hosts = set()
        for contacts in self._by_phone.values():
            for contact in contacts:
                host = contact.partition("@")[2] or contact.partition(":")[2]
                host = host.split(";", 1)[0].split(">", 1)[0]
                if host.startswith("["):
                    host = host[1:].partition("]")[0]
                else:
                    host = host.partition(":")[0]
                if host:
                    hosts.add(host)
        return frozenset(hosts)

    def has_contact(self, user_id: str, contact: str) -> bool:
        return any(contact in self._by_phone.get(p, {}) for p in self._book.desk_phones(user_id))

    def forget_contact(self, user_id: str, contact: str) -> None:
        """Forget ``contact`` whichever of the user's desk phones holds it."""
        for phone in self._book.desk_phones(user_id):
            self._by_phone.get(phone, {}).pop(contact, None)
        self._recompute(user_id)

    def live(self, user_id: str) -> tuple[str, ...]:
        """Desk phones of ``user_id`` that ring now (within the login limit), sorted."""
        return self._live.get(user_id, ())

    def live_registrations(self, user_id: str) -> tuple[Registration, ...]:
        """The registrations of ``user_id`` that ring now, newest first."""
        return self._kept.get(user_id, ())

    def ring_set(self, number: str, members: tuple[str, ...]) -> RingSet:
        """The live desk phones of ``members`` (the number's members, sorted), the members
        that have one, and their registrations to ring, in members' order.

        Kept per number while no member's ringing contacts change and while ``members`` is
        the very tuple it was built from: a reload builds a new book with new tuples, so a
        set built for the old members is never handed out for the new ones."""
        cached = self._ring_sets.get(number)
        if cached is not None and cached[0] is members:
            return cached[1]
        phones: list[str] = []
        users: list[str] = []
        contacts: list[tuple[str, str]] = []
        live, pairs = self._live, self._pairs
        for user in members:
            mine = live.get(user)
            if mine:
                phones.extend(mine)
                users.append(user)
                contacts.extend(pairs[user])
        built = (tuple(phones), tuple(users), tuple(contacts))
        self._ring_sets[number] = (members, built)
        return built

    def _recompute(self, user: str, *, capped: bool = True) -> tuple[Registration, ...]:
        """The login's live view again; ``capped``, the oldest registrations past the login
        limit are dropped and returned."""
        regs = sorted((r for p in self._book.desk_phones(user)
                       for r in self._by_phone.get(p, {}).values()), reverse=True)
        cap = self._max if capped else len(regs)
        kept, dropped = regs[:cap], tuple(regs[cap:])
        for r in dropped:
            self._by_phone[r.desk_phone].pop(r.contact, None)
        live = tuple(sorted({r.desk_phone for r in kept}))
        pairs = tuple((r.desk_phone, r.contact) for r in kept)
        if live != self._live.get(user, ()) or pairs != self._pairs.get(user, ()):
            self._ring_sets.clear()  # what rings changed; a refresh of the same order does not
        self._live[user] = live
        self._kept[user] = tuple(kept)
        self._pairs[user] = pairs
        return dropped
