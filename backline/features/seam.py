"""How a feature plugs into the controller: a builder and one small protocol.

Each feature (alerts, reminders, inbox delivery, email intake, SMS, emergency notices) has a
``build(context) -> Feature | None`` function; the app lists the builders in one place
(``backline.app.controller.FEATURES``), so adding a feature is one line there.  A builder
returns None when its feature is not configured (saying why in the log, and on the status page
through ``context.health`` where ops need to see it).

The controller then only calls the hooks below: it starts and closes every feature, mounts
their routes, and tells each of every mode round, every attempt newly journaled, every mode
change and every item held for the inbox.  A feature never reaches into another one; what it
needs of the app comes through the :class:`Context`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from backline.core.connections import Secret
from backline.core.conversations import ConversationBook
from backline.core.model import Directory
from backline.core.outage import ModeState
from backline.core.ownership import OwnershipBook
from backline.features.journal_disk import JournalDisk
from backline.features.refusal_gate import RefusalGate
from backline.features.status.health import Health
from backline.journal import Attempt, Journal, NewAttempt


@dataclass(frozen=True)
class Context:
    """What the app hands every feature's builder.

    ``mode`` is the controller's mode state now and ``changed`` its change event (a new one
    after each change: take it before reading the mode, and no change is missed).
    ``record_attempt`` journals an attempt (True if it was new) and tells every feature.
    ``held`` says something was just held for the inbox (every feature's ``items_held``).
    ``health`` is what the status page shows: a feature keeps its own entry in it.
    ``secret`` reads a secret the config names: the value, or "" with ``what`` and why it
    is missing logged as an error, followed by ``effect`` (the secrets stay with the app).
    ``record_imported`` is set once the PBX's record (its CDR, the faxes and voicemail in its
    spool) has been imported after this controller's start: the attempts the PBX took alone
    while no controller ran are journaled by then (set at once when there is no PBX).
    ``forget_voicemail`` removes messages (by msg_id) from the PBX's spool: the names removed,
    by msg_id, or None where the PBX's copy is not Backline's to remove (raises OSError).
    """

    directory: Directory
    journal: Journal
    clock: Callable[[], datetime]
    node: str  # this controller's PBX node ("" for one node), stamped on what it records
    book: OwnershipBook
    conversations: ConversationBook  # shared by reference with both drivers
    disk: JournalDisk  # the journal's free space, and held mail's budget in it
    mode: Callable[[], ModeState]
    changed: Callable[[], asyncio.Event]
    record_attempt: Callable[[NewAttempt], Awaitable[bool]]
    held: Callable[[], None]
    health: dict[str, Health]
    secret: Callable[[Secret, str, str], str]
    refusals: RefusalGate  # refused public requests, per source and minute
    record_imported: asyncio.Event
    forget_voicemail: Callable[[Collection[str]], Awaitable[dict[str, list[str]] | None]] = \
        lambda _: _not_ours()


async def _not_ours() -> dict[str, list[str]] | None:
    """No PBX spool of Backline's to remove messages from."""
    return None


@dataclass(frozen=True)
class Routes:
    """What a feature serves over HTTP: routes and sub-applications (mounted under their
    prefix) on the public listener (``connections.pages.listen``: the SMS provider, staff's
    alert links), and routes on the status listener (ops, behind its token)."""

    public: tuple[web.RouteDef, ...] = ()
    public_apps: tuple[tuple[str, web.Application], ...] = ()
    status: tuple[web.RouteDef, ...] = ()


class Feature:
    """A feature as the controller sees it.  Every hook does nothing by default: a feature
    subclasses this and overrides what it needs.  The hooks that are not coroutines must not
    block or wait: the PBX may be waiting on whoever calls them."""

    async def start(self) -> None:
        """Start the background work (a task, a listener)."""

    async def close(self) -> None:
        """Stop after the work in flight; nothing is lost (the journal holds what is owed)."""

    def routes(self) -> Routes:
        return Routes()

    async def each_round(self) -> None:
        """Each mode round (about a second): take up what other processes wrote to the
        journal.  A :class:`~backline.journal.JournalError` counts the round as failed."""

    def attempt_recorded(self, attempt: Attempt) -> None:
        """``attempt`` was newly journaled (not a repeat of its key)."""

    def mode_changed(self, state: ModeState) -> None:
        """The controller's mode is now ``state``."""

    def items_held(self) -> None:
        """Something was held for the inbox (an email kept, say)."""


class Service(Protocol):
    """A background service (:class:`backline.features.sending.leased.LeasedDelivery`)."""

    def start(self) -> None: ...
    async def close(self) -> None: ...


S = TypeVar("S", bound=Service)


class Background(Feature, Generic[S]):
    """A feature that is one background service, started and closed with the controller.
    ``service`` may be replaced before :meth:`start` (tests give the alerts other windows)."""

    def __init__(self, service: S) -> None:
        self.service = service

    async def start(self) -> None:
        self.service.start()

    async def close(self) -> None:
        await self.service.close()


Build = Callable[[Context], Feature | None]
