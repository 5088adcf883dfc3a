"""Adding a teammate to one conversation: the change (from the CLI, the API or a transfer),
journaled and audited, and the running controller's copy of who is in which conversation.

The book every driver decides with (:class:`~backline.core.conversations.ConversationBook`) is
shared by reference; :class:`ConversationMembers` refills it in place from the journal at
start and whenever the journal's changes moved (each controller round, and at once after a
change made through this process), so a change made anywhere reaches both drivers without a
restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from backline.core.conversations import (
    CannotRemoveNumberMember,
    ConversationBook,
    ConversationKey,
    ConversationRefused,
    addition,
    removal,
)
from backline.core.e164 import redact
from backline.core.ownership import OwnershipBook
from backline.core.transfers import (
    AttendedJoin,
    RingTransferTarget,
    Transfer,
    TransferOutcome,
    transfer_note,
)
from backline.features.json_requests import json_object, refusal
from backline.features.seam import Context, Feature, Routes
from backline.journal.conversations import ADD, REMOVE, AddedMember, CallHandling

log = logging.getLogger("backline.conversations")

# What the API reads from a request body at most: a few short fields.
MAX_BODY = 4096


class ConversationStore(Protocol):
    """What of the journal this needs (``SqlJournal`` is one)."""

    def change_conversation(self, action: str, key: ConversationKey, at: datetime, by: str,
                            via: str, detail: str = "") -> bool: ...
    def conversation_members(self) -> list[AddedMember]: ...
    def conversation_version(self) -> tuple[int, int]: ...
    def conversation_keys(self) -> list[tuple[str, str, str]]: ...
    def conversation_changes_after(self, after: int
                                   ) -> tuple[list[tuple[int, str, str, str, str]],
                                              tuple[int, int]]: ...
    def record_handling(self, h: CallHandling) -> None: ...


@dataclass(frozen=True, slots=True)
class Changed:
    """What a change did: ``done`` False when it changed nothing (already so)."""

    key: ConversationKey
    action: str
    done: bool


def change_member(store: ConversationStore, book: OwnershipBook, action: str, number: str,
                  party: str, user_id: str, *, by: str, via: str, at: datetime,
                  detail: str = "") -> Changed:
    """Add or remove ``user_id`` in the conversation (``number``, ``party``); journaled and
    audited.  Raises ConversationRefused (CannotRemoveNumberMember for a member of the
    number), with why, and then nothing is written."""
    key = addition(book, number, party, user_id) if action == ADD \
        else removal(book, number, party, user_id)
    return Changed(key, action, store.change_conversation(action, key, at, by, via, detail))


class ConversationMembers:
    """This controller's copy of the conversation members, kept level with the journal."""

    def __init__(self, store: ConversationStore, book: OwnershipBook,
                 conversations: ConversationBook, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.book = book
        self.conversations = conversations
        self.clock = clock
        self._version: tuple[int, int] | None = None
        self._refreshing = asyncio.Lock()

    def load(self) -> None:
        """Read the journal's members now (at start, before any call is decided)."""
        version = self.store.conversation_version()
        self.conversations.hold(self.store.conversation_keys())
        self._version = version

    async def refresh(self) -> bool:
        """Take in the journal's changes if there are new ones; True if there were.

        Only the new changes are read and applied, as the journal applied them (a practice
        with 100,000 conversations read them all again on each change: 45 MB more resident,
        bench.memory); when the version says a change was missed, all are read again."""
        async with self._refreshing:
            if self._version is not None:
                seen_count, seen_newest = self._version
                newer, version = await asyncio.to_thread(self.store.conversation_changes_after,
                                                         seen_newest)
                if version == self._version:
                    return False
                if version == (seen_count + len(newer), newer[-1][0] if newer else seen_newest):
                    for _, action, number, party, user_id in newer:
                        if action == ADD:
                            self.conversations.add(number, party, user_id)
                        else:
                            self.conversations.discard(number, party, user_id)
                    self._version = version
                    log.info("conversation members now in effect: %d change(s) read, %d "
                             "conversation(s) with someone added (change #%d)", len(newer),
                             len(self.conversations), version[1])
                    return True
            version = await asyncio.to_thread(self.store.conversation_version)
            if version == self._version:
                return False
            keys = await asyncio.to_thread(self.store.conversation_keys)
            # Built off the loop (100,000 entries take tens of ms), swapped in one step; only
            # this method changes the book, one call at a time.
            await asyncio.to_thread(self.conversations.hold, keys)
            self._version = version
            log.info("conversation members now in effect: %d addition(s) (change #%d)",
                     len(keys), version[1])
            return True

    async def change(self, action: str, number: str, party: str, user_id: str, *, by: str,
                     via: str, detail: str = "") -> Changed:
        """``change_member`` off the event loop, then in effect here at once."""
        changed = await asyncio.to_thread(
            change_member, self.store, self.book, action, number, party, user_id, by=by,
            via=via, at=self.clock(), detail=detail)
        if changed.done:
            log.warning("%s %s %s the conversation of %s with %s (by %s via %s)",
                        "added" if action == ADD else "removed", user_id,
                        "to" if action == ADD else "from", changed.key.number,
                        redact(changed.key.party), by, via)
        await self.refresh()
        return changed

    async def transferred(self, call_key: str, transfer: Transfer,
                          decision: TransferOutcome) -> None:
        """A desk phone transferred the call ``call_key``: its journal record says who handled
        it and to whom it went, and whoever it rings who is not a member of the number is
        added to that one conversation (journaled and audited)."""
        note = transfer_note(decision, transfer.kind)
        await asyncio.to_thread(self.store.record_handling, CallHandling(
            call_key, self.clock(), decision.by, f"transfer.{transfer.kind.value}", note))
        if isinstance(decision, RingTransferTarget | AttendedJoin):
            for user in decision.added:
                try:
                    await self.change(ADD, decision.number, decision.party, user,
                                      by=decision.by, via="transfer",
                                      detail=f"{transfer.kind.value} transfer of {call_key}")
                except ConversationRefused as exc:  # deactivated meanwhile, say
                    log.warning("a transfer could not add %s to its conversation: %s", user,
                                exc)

    # -- the API (on the status listener, behind its bearer token) --------------------------

    def routes(self) -> list[web.RouteDef]:
        """``POST /conversations/add``, ``/conversations/remove`` and ``/conversations/list``,
        each a JSON object (``number``, ``party``, ``user``, ``by``); bodies, never URLs, carry
        the party's number."""
        return [web.post("/conversations/add", self._add),
                web.post("/conversations/remove", self._remove),
                web.post("/conversations/list", self._list)]

    async def _add(self, request: web.Request) -> web.Response:
        return await self._change(request, ADD)

    async def _remove(self, request: web.Request) -> web.Response:
        return await self._change(request, REMOVE)

    async def _change(self, request: web.Request, action: str) -> web.Response:
        body = await _body(request)
        fields = {k: body.get(k) for k in ("number", "party", "user", "by")}
        missing = [k for k, value in fields.items() if not isinstance(value, str) or not value]
        if missing:
            return refusal(400, f"expected strings for {', '.join(missing)}")
        try:
            changed = await self.change(action, str(fields["number"]), str(fields["party"]),
                                        str(fields["user"]), by=str(fields["by"])[:80],
                                        via="api")
        except ConversationRefused as exc:
            return refusal(409 if isinstance(exc, CannotRemoveNumberMember) else 422,
                            str(exc))
        return web.json_response({"number": changed.key.number, "party": changed.key.party,
                                  "user": changed.key.user_id, "action": action,
                                  "changed": changed.done})

    async def _list(self, request: web.Request) -> web.Response:
        body = await _body(request)
        number, party = body.get("number"), body.get("party")
        members = await asyncio.to_thread(self.store.conversation_members)
        out = []
        for m in members:
            if isinstance(number, str) and number and m.key.number != number:
                continue
            if isinstance(party, str) and party and m.key.party != party:
                continue
            out.append({"number": m.key.number, "party": m.key.party, "user": m.key.user_id,
                        "added_at": m.added_at.isoformat(), "added_by": m.added_by,
                        "via": m.via})
        return web.json_response({"added": out})


class Conversations(Feature):
    """The members as a feature: loaded when built (before any call is decided), taken up
    again each round, and the API on the status listener only behind its bearer token."""

    def __init__(self, context: Context) -> None:
        self.members = ConversationMembers(context.journal, context.book,
                                           context.conversations, context.clock)
        self.members.load()
        status = context.directory.connections.status
        self._api = status is not None and bool(status.token.env or status.token.file)

    async def each_round(self) -> None:
        await self.members.refresh()

    def routes(self) -> Routes:
        return Routes(status=tuple(self.members.routes()) if self._api else ())


def build(context: Context) -> Conversations:
    return Conversations(context)


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object(request, MAX_BODY)
