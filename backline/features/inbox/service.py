"""The drain: every held item goes to the practice's inbox, in order, exactly once.

Wiring only; the document and the meaning of the inbox's answer are
:mod:`backline.features.inbox.payload`, the queue lives in the journal
(``backline.journal.delivery``), so a controller restart resumes where the last one stopped:

1. While the mode is normal, each round first queues attempts recorded as held (by any path:
   controller, CDR import, fax spool) and then sends the queue's head, one item at a time, in
   the order received (``received_at``, then id).  Held emails are queued by the SMTP
   listener in the same transaction that keeps them.
2. Each try carries the item's ``Idempotency-Key``.  A 2xx is recorded as accepted (the
   attempt shows ``delivered``) and the item is never sent again; acceptances are journaled
   in one commit per batch (up to 50), before the queue is read again.  An inbox that committed
   and then dropped the connection gets the same key on the retry and answers without filing
   twice: that, plus acceptance in the journal, is what makes it exactly once.
3. A timeout, a connection error, a 5xx (or 408/409/425/429), or an answer that says the
   endpoint is wrong rather than the item (401, 403, 404, 405, 407: a bad token or URL, logged
   as an error) leaves the item at the head, tried again after a backoff (1 s doubling to
   5 min), forever: later items wait behind it, since the inbox must see them in order.  A
   fax file missing on this node but recorded by another node is tried again too (its
   file may be on that node's disk, or come back); any other unreadable file as well.
   An SMS whose outage auto-reply is still open when its turn comes (the outage ended while
   the gateway was failing) has the reply closed as not sent first, so the item carries the
   reply's final state; one being tried at that moment keeps the item at the head until
   its try ends (seconds), or, if its sender died mid-try, until its lease lapses (2 min).
4. An item-specific 4xx (400, 413, 415, 422, ...) or a fax file gone from this node marks
   the item failed with the status (never the body, which may echo patient data), logs it
   as an error and shows it in ``backline attempts``; the drain then **goes on with the next
   item**.  Stopping would keep order among what the inbox gets, but
   a refused item stays refused however long we wait, so stopping would hold every later
   patient message back until someone fixes it by hand.  Going on keeps the order of
   everything delivered, and the refused item is reported rather than hidden.
5. Switching to outage mode stops the drain after the item in flight; going back to normal
   wakes it (``backline.features.inbox.feature``).

One drain at a time per journal: a lease in the journal (``inbox_lease``), held by a name
unique to this process (host, pid and a random suffix), so two controllers on one host do not
both drain.  The lease is renewed during a long try (a big fax on a slow link).  A controller
restarted on the same host takes over at once a lease whose holder's pid is no longer running
there; otherwise it waits for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import assert_never

import aiohttp

from backline.core.model import Directory
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.features.inbox.payload import (
    Accepted,
    Answer,
    Refused,
    TryAgain,
    answer_for,
    endpoint_problem,
    idempotency_key,
    item_document,
)
from backline.features.sending.leased import FAILED_ROUND_NAP, Clock, LeasedDelivery
from backline.features.sending.retry import Backoff
from backline.features.sms.reply import OUTAGE_OVER
from backline.journal import AttemptKind, Journal, JournalError
from backline.journal.delivery import InboxItem
from backline.journal.replies import SmsReply

log = logging.getLogger("backline.inbox")

LEASE_SECONDS = 120.0
"""How long the drain lease lasts without renewal; renewed at half, also during a long try."""
CONNECT_SECONDS = 10.0
READ_SECONDS = 60.0  # without a byte either way; a big item may take longer in all
BATCH = 50
MAX_NAP = 30.0  # seconds the task sleeps at most, in case another controller added work
INLINE_WAIT = 2.0  # a retry due within this many seconds is waited for inside the round


INBOX_BACKOFF = Backoff(first=1.0)  # the head holds every later item back: soon at first


class InboxDrain(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`; :meth:`wake` when the mode turns
    normal or an item is held."""

    def __init__(self, journal: Journal, book: OwnershipBook, url: str, token: str,
                 mode: Callable[[], Mode], clock: Clock, *, files: Callable[[str], Path] = Path,
                 holder: str = "", backoff: Backoff | None = None, node: str = "") -> None:
        super().__init__("backline-inbox", "inbox", log, journal, clock)
        self.book = book
        self.url = url
        self._token = token
        self._mode = mode
        self._files = files
        self.holder = holder or process_holder()
        self.node = node  # this controller's PBX node: whose fax files are on this disk
        self.backoff = backoff or INBOX_BACKOFF
        self._session: aiohttp.ClientSession | None = None
        self._lease_until: datetime | None = None
        self._accepted: list[int] = []  # accepted by the inbox, not yet journaled
        self._last_empty_round = 0
        self._progress = asyncio.Condition()
        self.delivered = 0  # this process's count, for the benchmark
        # Told of each try's result (True, "") or (False, why): the status page's verdict.
        self.on_result: Callable[[bool, str], None] | None = None

    async def close(self) -> None:
        """Stop after the try in flight (if any); give the lease back."""
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._lease_until is not None:
            with contextlib.suppress(JournalError):
                await asyncio.to_thread(self.journal.release_drain, self.holder)
            self._lease_until = None

    async def drained(self, within: float = 60.0) -> None:
        """Until a round that began after this call found nothing left to send (accepted or
        refused, all of it).  TimeoutError after ``within`` s.  For tests and the bench."""
        target = self.rounds_started + 1
        self.wake()  # that round starts now, not after a nap (a backoff is cut short once)
        async with asyncio.timeout(within), self._progress:
            await self._progress.wait_for(lambda: self._last_empty_round >= target)

    # -- the task --------------------------------------------------------------------------

    async def round(self) -> float:
        """While the mode is normal: send the queue's head until it is empty, blocked or the
        mode changes; return how long to wait before the next round."""
        if self._mode() is not Mode.NORMAL:
            return MAX_NAP
        await asyncio.to_thread(self.journal.enqueue_held)
        if not await self._keep_lease():
            return FAILED_ROUND_NAP  # another node drains; look again later
        try:
            return await self._send_queue(self.rounds_started)
        finally:
            await self._record_accepted()

    async def _send_queue(self, round_no: int) -> float:
        while not self.stopping and self._mode() is Mode.NORMAL:
            await self._record_accepted()  # before reading the queue: or they come back
            items = await asyncio.to_thread(self.journal.next_inbox_items, BATCH)
            if not items:
                async with self._progress:
                    self._last_empty_round = round_no
                    self._progress.notify_all()
                return MAX_NAP
            for item in items:
                if self.stopping or self._mode() is not Mode.NORMAL:
                    return MAX_NAP
                now = self._clock()
                if item.next_try_at is not None and item.next_try_at > now:
                    return (item.next_try_at - now).total_seconds()
                if not await self._keep_lease():
                    return FAILED_ROUND_NAP
                wait = await self._deliver(item)
                if wait is None:
                    continue
                # The head is blocked: everything behind it waits too.  A short wait is
                # spent here, then the queue is read again; a long one (or a wake-up: new
                # work, a mode change, stopping) ends the round.
                if wait > INLINE_WAIT or self.woken.is_set():
                    return wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), wait)
                if self.woken.is_set():
                    return 0.0
                break
        return MAX_NAP

    async def _record_accepted(self) -> None:
        """Journal the acceptances not yet journaled, in one commit.  Until then a crash
        only means those items go again, with the same keys: the inbox files none twice."""
        if self._accepted:
            accepted, self._accepted = self._accepted, []
            await asyncio.to_thread(self.journal.inbox_accepted, accepted, self._clock())

    async def _keep_lease(self) -> bool:
        now = self._clock()
        if self._lease_until is not None and now < self._lease_until - timedelta(
                seconds=LEASE_SECONDS / 2):
            return True
        until = now + timedelta(seconds=LEASE_SECONDS)
        if await asyncio.to_thread(self.journal.claim_drain, self.holder, now, until):
            self._lease_until = until
            return True
        # Held by a process of this host that is gone (a restarted controller)?  Take it now.
        current = await asyncio.to_thread(self.journal.drain_holder)
        if current and current != self.holder and holder_is_dead(current) and \
                await asyncio.to_thread(self.journal.claim_drain, self.holder, now, until,
                                        dead=current):
            log.warning("inbox: took over the drain from a stopped controller on this host")
            self._lease_until = until
            return True
        self._lease_until = None
        return False

    @contextlib.asynccontextmanager
    async def _lease_kept(self) -> AsyncIterator[None]:
        """Renew the lease while one try runs: a big item on a slow link may outlast it."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 4)
                with contextlib.suppress(JournalError):
                    await self._keep_lease()

        task = asyncio.create_task(renew(), name="backline-inbox-lease")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, item: InboxItem) -> float | None:
        """One try of ``item``; None when it is settled (accepted or refused), else the
        seconds until it is due again."""
        async with self._lease_kept():
            answer = await self._try(item)
        now = self._clock()
        if self.on_result is not None:
            self.on_result(isinstance(answer, Accepted),
                           "" if isinstance(answer, Accepted)
                           else f"item {item.id} ({item.kind}): {answer.reason}")
        match answer:
            case Accepted():
                self._accepted.append(item.id)  # journaled with the batch: see _record_accepted
                self.delivered += 1
                log.info("inbox: item %d (%s) delivered", item.id, item.kind)
                return None
            case Refused():
                await asyncio.to_thread(self.journal.inbox_refused, item.id, now, answer.reason)
                log.error("inbox: item %d (%s) refused for good: %s; see `backline attempts`; "
                          "the drain goes on with the next item", item.id, item.kind,
                          answer.reason)
                return None
            case TryAgain():
                tries = item.tries + 1
                delay = self.backoff.delay(tries)
                await asyncio.to_thread(self.journal.inbox_retry, item.id,
                                        now + timedelta(seconds=delay), answer.reason)
                if endpoint_problem(answer):
                    # Every item would get the same answer: the URL, token or proxy is wrong.
                    # Not the URL itself: a query string may carry a secret.
                    log.error("inbox: the inbox answered %s: check connections.inbox (url, "
                              "token); nothing is refused, item %d is tried again in %.1f s",
                              answer.reason, item.id, delay)
                    return delay
                log.warning("inbox: item %d (%s) not accepted (try %d: %s); next try in "
                            "%.1f s", item.id, item.kind, tries, answer.reason, delay)
                return delay
            case _:
                assert_never(answer)

    async def _try(self, item: InboxItem) -> Answer:
        reply = None
        if item.attempt is not None and item.attempt.kind is AttemptKind.SMS:
            # The drain runs after the outage: an open reply is closed now, and goes final.
            reply = await asyncio.to_thread(self.journal.final_reply, item.attempt.id,
                                            self._clock(), OUTAGE_OVER)
            if reply is not None and not reply.state.final:
                return TryAgain("its automatic reply is being sent")
        try:
            body = await asyncio.to_thread(self._document, item, reply)
        except FileNotFoundError as exc:
            attempt = item.attempt
            if attempt is not None and (not attempt.node or attempt.node == self.node):
                # Recorded on this node and gone from its disk: no try will do better.
                return Refused(f"the {_file_of(item)} is missing ({exc.strerror})")
            return TryAgain(f"the {_file_of(item)} is not on this node ({exc.strerror})")
        except OSError as exc:
            # Permissions, a full or unmounted disk, an I/O error: ops can fix it; try again.
            return TryAgain(f"the {_file_of(item)} cannot be read now ({exc.strerror})")
        return await self._post(item, body)

    def _document(self, item: InboxItem, reply: SmsReply | None = None) -> bytes:
        file = None
        if item.attempt is not None and item.attempt.file:
            file = self._files(item.attempt.file).read_bytes()
        if item.email is not None:
            # The queue is read without bodies: one email's bytes, only when it is sent.
            item = dataclasses.replace(
                item, email=dataclasses.replace(
                    item.email, data=self.journal.held_email_data(item.email.id)))
        return json.dumps(item_document(item, self.book, file, reply)).encode()

    async def _post(self, item: InboxItem, body: bytes) -> Answer:
        if self._session is None:
            # No total: a big fax on a slow link may take minutes and still be progressing.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS))
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key(item)}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.post(self.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                await response.read()
                return answer_for(response.status, response.reason or "")
        except TimeoutError:
            return TryAgain("no answer in time")
        except aiohttp.ClientError as exc:
            # Includes a connection dropped after the inbox committed: the key makes the
            # retry harmless.
            return TryAgain(f"connection failed ({type(exc).__name__})")


def _file_of(item: InboxItem) -> str:
    """What an item's file is, for its error: a fax's, or a voicemail's recording."""
    return "voicemail recording" if item.kind == AttemptKind.VOICEMAIL.value else "fax file"


def process_holder() -> str:
    """The drain lease holder's name: unique to this process, even beside another
    controller on the same host."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_is_dead(holder: str) -> bool:
    """True if ``holder`` names a process of this host that no longer runs.  Unknown (another
    host, an old-style name, a pid now used by someone else) is not dead: the lease expires."""
    host, _, rest = holder.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it runs, as another user
    return False


def inbox_for(directory: Directory, journal: Journal, mode: Callable[[], Mode], clock: Clock,
              *, backoff: Backoff | None = None, node: str = "") -> InboxDrain | None:
    """The practice's drain, or None (logged) if ``connections.inbox`` is not set up."""
    from backline.app.secrets import SecretMissing, read_secret
    from backline.features.links.server import fax_files

    inbox = directory.connections.inbox
    if inbox is None or not inbox.url:
        log.warning("connections.inbox is not configured: held items stay in the journal")
        return None
    try:
        token = read_secret(inbox.token, "connections.inbox.token") if inbox.token else ""
    except SecretMissing:
        # Said once at start by the controller ("inbox delivery is off: ..."), with the
        # other features a missing secret turns off; the status page shows it too.
        return None
    storage = directory.connections.storage.url
    base = Path(storage.removeprefix("sqlite://")).parent if storage.startswith("sqlite://") \
        else None
    return InboxDrain(journal, OwnershipBook(directory), inbox.url, token, mode, clock,
                      files=fax_files(base), backoff=backoff, node=node)


def why_blocked(directory: Directory) -> str:
    """Why held items cannot be delivered ("" when they can)."""
    from backline.app.secrets import SecretMissing, read_secret

    inbox = directory.connections.inbox
    if inbox is None or not inbox.url:
        return "connections.inbox is not configured"
    if inbox.token:
        try:
            read_secret(inbox.token, "connections.inbox.token")
        except SecretMissing as exc:
            return f"the controller has no inbox token ({exc})"
    return ""
