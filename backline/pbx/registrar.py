"""The desk phones' registrations held by Kamailio as the registrar, as the ring set.

Kamailio keeps every registration in the ``location`` table of the shared PostgreSQL
(backline/render/kamailio.py); a trigger NOTIFYs ``backline_location`` after each change.  The
controller LISTENs, reads the whole table again after each notice (and after every connect),
and holds exactly what it lists, as it holds Asterisk's own contact list on a single node:
the registrar applied the login limit, so nothing is dropped here.  ``location_contacts`` is
pure (rows in, registrations out); ``LocationWatch`` is the thin I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registration

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("backline.registrar")

CHANNEL = "backline_location"  # backline.render.kamailio.LOCATION_CHANNEL
# login, contact, expires (epoch seconds), the desk phone that registered it (or None)
Row = tuple[str, str, float, str | None]
QUERY = ("SELECT l.username, l.contact, extract(epoch FROM l.expires)::float8, a.avalue "
         "FROM location l LEFT JOIN location_attrs a ON a.ruid = l.ruid AND a.aname = 'phone' "
         "ORDER BY l.id")
# A contact we will put into a Dial string (as backline.pbx.asterisk.contacts); a phone on TCP
# or TLS has Kamailio's ``;alias=IP~PORT~PROTO`` (backline/render/kamailio_registrar.py).
_SAFE_CONTACT = re.compile(r"sips?:[A-Za-z0-9._~+-]+@[A-Za-z0-9.\[\]:-]+(;[A-Za-z0-9=._~-]+)*")


def location_contacts(book: OwnershipBook, rows: Iterable[Row]) -> list[Registration]:
    """The desk phones' registrations among ``rows``: logins no longer provisioned and
    contacts we will not dial left out; a contact whose desk phone is not one of its login's
    (or not recorded) rings under the login's first phone."""
    held = []
    for login, contact, expires, phone in rows:
        phones = book.desk_phones(login)
        if not book.is_active(login) or not phones or not _SAFE_CONTACT.fullmatch(contact):
            continue
        held.append(Registration(expires, phone if phone in phones else phones[0], contact))
    return held


class LocationWatch:
    """LISTEN for changes of the location table at ``url``; hand each fresh reading to
    ``hold``.  A lost connection is logged, ``unread`` told, and the connection made again
    (after ``retry_seconds``): until then the last reading keeps ringing."""

    def __init__(self, url: str, book: OwnershipBook,
                 hold: Callable[[list[Registration]], None],
                 unread: Callable[[object], None], retry_seconds: float = 1.0) -> None:
        self.url = url
        self.book = book
        self.hold = hold
        self.unread = unread
        self.retry_seconds = retry_seconds
        self.read_once = asyncio.Event()  # set after the first reading is held
        self._task: asyncio.Task[None] | None = None
        self._rows: list[Row] | None = None  # the last reading, as the table listed it

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # Imported here, where a registrar is configured: psycopg and libpq add ~10 MB to a
        # controller that has none (bench.memory).
        import psycopg

        while True:
            try:
                await self._follow()
            except (psycopg.Error, OSError) as exc:
                log.warning("reading the registrar's location table failed (%s); trying "
                            "again", type(exc).__name__)
                self.unread(exc)
            await asyncio.sleep(self.retry_seconds)  # before reconnecting to a lost database

    async def _follow(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            await self._read(conn)  # after LISTEN: no change between the two is missed
            while True:
                # One notice at a time, outside the generator: the connection reads the
                # table between them (psycopg keeps notices that arrive meanwhile).
                async for _ in conn.notifies(stop_after=1):
                    pass
                await self._read(conn)

    async def _read(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        cur = await conn.execute(QUERY)
        self._rows = [_row(r) for r in await cur.fetchall()]
        self.hold(location_contacts(self.book, self._rows))
        self.read_once.set()

    def practice_changed(self) -> None:
        """The book now answers for a reloaded practice: hold the last reading again under
        it.  The table does not change with the YAML, so no notice would come: a user
        deactivated kept their registrations, and one reactivated stayed silent until their
        phone registered again.  Every change of the table is noticed, so the last reading
        is the table as it is."""
        if self._rows is not None:
            self.hold(location_contacts(self.book, self._rows))


def read_location(url: str) -> list[Row]:
    """The location table once (`backline doctor`); raises psycopg.Error."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return [_row(r) for r in conn.execute(QUERY).fetchall()]


def _row(r: tuple[object, ...]) -> Row:
    login, contact, expires, phone = r
    return str(login), str(contact), float(str(expires)), None if phone is None else str(phone)
