"""Small practice directories for the core tests, built directly as typed objects."""

from __future__ import annotations

from backline.core.connections import Connections, Storage
from backline.core.model import (
    PRACTICE,
    Backup,
    Carry,
    Directory,
    Number,
    OwnerKind,
    Party,
    Practice,
    Team,
    User,
)


def user(uid: str, *, active: bool = True, phones: int = 1) -> User:
    return User(uid, uid.title(), f"{uid}@x.example", False, active, "",
                tuple(f"{uid}-p{i}" for i in range(phones)))


def number(e164: str, owner: Party = PRACTICE, members: tuple[Party, ...] = (), *,
           carries: tuple[Carry, ...] = (Carry.VOICE,), auto_assign: bool = False,
           tags: tuple[str, ...] = (), contact_tags: tuple[str, ...] = (),
           caller_id_name: str = "") -> Number:
    return Number(e164, frozenset(carries), owner, members, auto_assign, tags, contact_tags,
                  caller_id_name, False, e164[-10:])


def u(uid: str) -> Party:
    return Party(OwnerKind.USER, uid)


def t(tid: str) -> Party:
    return Party(OwnerKind.TEAM, tid)


def directory(users: list[User], teams: list[Team], numbers: list[Number],
              max_per_login: int = 3) -> Directory:
    return Directory(Practice("Test Practice", "UTC"), max_per_login, tuple(users),
                     tuple(teams), tuple(numbers), Backup(), Connections(Storage("sqlite:///x")))
