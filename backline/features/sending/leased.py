"""One leased-delivery service: what the alerts, the outage reminders, the SMS auto-replies,
the emergency notices and the inbox drain share.

Each is a background task that works in rounds (:class:`~backline.features.sending.rounds.Rounds`):
a round claims what is due in the journal under a lease (so that controllers sharing a journal
never send the same thing twice at once), tries it, records each result, and says how long to
nap before the next round; it is woken early when new work arrives, and stopped only between
rounds.  A failed round is logged and the task naps ``FAILED_ROUND_NAP`` before the next: the
task outlives any one bad round, since what it sends is what tells anyone at all.

A subclass writes :meth:`LeasedDelivery.round` (and, if it needs them, :meth:`catch_up`,
run once at start for work journaled before a restart, and :meth:`also_wake`); the start,
wake, settle, close and nap are here.  How a message that did not go is treated is
:class:`NotSent`, the same for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Protocol, TypeVar

from backline.core.e164 import redact
from backline.features.sending.mail import MailError
from backline.features.sending.rounds import Rounds
from backline.features.sms.gateway import GatewayError, GatewayProtocolError, GatewayRefused
from backline.features.sms.twilio import UnsendableSms
from backline.journal import Journal, JournalError

Clock = Callable[[], datetime]

T = TypeVar("T")

FAILED_ROUND_NAP = 5.0  # seconds: not at once, or the same failure would spin the loop


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...
    async def close(self) -> None: ...


class SmsSender(Protocol):
    async def send(self, sender: str, to: str, body: str) -> str: ...
    async def close(self) -> None: ...


class NotSent(Exception):
    """One message did not go; ``reason`` says why (never its text or a number).

    The one rule for every sender: a message the server or gateway refused (an SMTP reply
    code, a 4xx, a number it will not take) fails alone, and the rest of the batch goes on.
    When the server cannot be reached at all (``unreachable``: no connection, no answer, a
    5xx), the rest of the batch on that channel is not tried this round: each is recorded as
    failed with the same reason and is due again after its backoff, so nothing is given up
    or lost, only put back.  Trying each would make every one wait out the same timeout,
    holding the round (and a controller that is stopping) for minutes while nothing else
    goes; failing only the first would let the rest wait out those timeouts anyway.
    ``never``: no try will ever send it (a number no gateway would take).
    """

    def __init__(self, reason: str, *, unreachable: bool = False, never: bool = False
                 ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable
        self.never = never


async def send_email(mailer: Mailer, message: EmailMessage) -> None:
    """Send ``message``; :class:`NotSent` if the server did not take it."""
    try:
        await mailer.send(message)
    except MailError as exc:
        raise NotSent(exc.reason, unreachable=exc.code is None) from None


async def send_text(sms: SmsSender, sender: str, to: str, body: str, log: logging.Logger,
                    what: str) -> str:
    """Text ``body`` to ``to``; return the gateway's id for it ("" when the gateway took it
    but its answer could not be read: sending again could text twice, so it counts as sent,
    with a warning naming ``what``).  :class:`NotSent` if it did not go.

    A dropped connection after the request left may have sent it although this raises: the
    retry may then text twice.  A rare double text beats a lost one."""
    try:
        return await sms.send(sender, to, body)
    except GatewayProtocolError as exc:
        log.warning("%s texted to %s, but %s", what, redact(to), exc.reason)
        return ""
    except UnsendableSms as exc:
        raise NotSent(exc.reason, never=True) from None
    except GatewayRefused as exc:
        raise NotSent(str(exc)) from None
    except GatewayError as exc:
        raise NotSent(str(exc), unreachable=True) from None


class LeasedDelivery:
    """Start with :meth:`start`, stop with :meth:`close` (which also closes ``mailer`` and
    ``sms``, the connections the rounds send through).  ``name`` names the task; ``what``
    starts its log lines; ``texts_to`` are SMS recipients, who need ``sms``."""

    def __init__(self, name: str, what: str, log: logging.Logger, journal: Journal,
                 clock: Clock, *, mailer: Mailer | None = None, sms: SmsSender | None = None,
                 texts_to: Sequence[str] = ()) -> None:
        if texts_to and sms is None:
            raise ValueError("SMS recipients need an SMS gateway")
        self.journal = journal
        self._clock = clock
        self._what, self._log = what, log
        self._mail, self._texts = mailer, sms
        self._rounds = Rounds(name)

    async def email(self, message: EmailMessage) -> None:
        """Send ``message``; :class:`NotSent` if it did not go."""
        if self._mail is None:
            raise NotSent("no usable connections.smtp")
        await send_email(self._mail, message)

    async def text(self, sender: str, to: str, body: str, what: str) -> str:
        """Text ``body`` to ``to`` (see :func:`send_text`); :class:`NotSent` if it did not
        go."""
        if self._texts is None:
            raise NotSent("no usable connections.sms_gateway")
        return await send_text(self._texts, sender, to, body, self._log, what)

    async def claim_due(self, claim: Callable[[datetime, datetime], list[T]],
                        lease_seconds: float) -> list[T]:
        """What ``claim`` (a journal's ``claim_due_...``) hands this process of the work due
        now, leased for ``lease_seconds``: longer than any one try, so no other controller on
        the journal sends it meanwhile, and a dead controller's lease lapses."""
        now = self._clock()
        return await asyncio.to_thread(claim, now, now + timedelta(seconds=lease_seconds))

    async def batch_done(self) -> None:
        """Drop the mail connection after a batch: none is left idle for the server to time
        out under us (the next batch opens one again)."""
        if self._mail is not None:
            await self._mail.close()

    # -- what a sender writes --------------------------------------------------------------

    async def round(self) -> float:
        """Send what is due now; return the seconds until the next round (0: at once)."""
        raise NotImplementedError

    async def catch_up(self) -> None:
        """Once, before the first round: work a restart left owed (a JournalError is logged
        by whoever raised it, and the rounds go on)."""

    def also_wake(self) -> asyncio.Event | None:
        """An event that ends the nap after the round about to begin (taken before it)."""
        return None

    # -- the life of the task --------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Stop after the message in flight: the rest of a batch waits for the next start."""
        return self._rounds.stopping

    @property
    def woken(self) -> asyncio.Event:
        """Set by :meth:`wake` (and :meth:`close`) until the next round begins."""
        return self._rounds.woken

    @property
    def rounds_started(self) -> int:
        """How many rounds have begun (the one in progress is the latest)."""
        return self._rounds.started

    def start(self) -> None:
        self._rounds.start(self._run)

    def wake(self) -> None:
        """Look for due work now (new work, a mode change, a test that moved the clock)."""
        self._rounds.wake()

    async def settle(self, within: float = 60.0) -> None:
        """Wake the task and wait until a whole round that began after this call is done:
        what was due at the clock's current time has been tried.  TimeoutError after
        ``within`` s (a bound on a hang, not a promise: a loaded machine is slow).  For tests
        and the benchmarks, which move the clock by hand."""
        await self._rounds.settle(within)

    async def close(self) -> None:
        """Stop the task after the send in progress (if any); close the connections."""
        await self._rounds.stop()
        if self._mail is not None:
            await self._mail.close()
        if self._texts is not None:
            await self._texts.close()

    def nap_until(self, due: datetime | None, now: datetime, most: float) -> float:
        """Seconds from ``now`` until ``due`` (None: nothing due), at most ``most`` (another
        controller may add work the journal does not wake us for)."""
        if due is None:
            return most
        return min(max((due - now).total_seconds(), 0.0), most)

    async def _run(self) -> None:
        with contextlib.suppress(JournalError):
            await self.catch_up()
        while not self._rounds.stopping:
            extra = self.also_wake()  # before the round: no change during it is missed
            self._rounds.begin()
            nap = FAILED_ROUND_NAP
            try:
                nap = await self.round()
            except JournalError as exc:
                self._log.error("%s: the journal failed (%s); trying again shortly",
                                self._what, exc)
            except Exception:
                # The task must outlive one bad round.
                self._log.exception("%s: a round failed; trying again shortly", self._what)
            await self._rounds.end()
            if self._rounds.stopping:
                break
            if nap > 0:
                await self._nap(nap, extra)

    async def _nap(self, seconds: float, extra: asyncio.Event | None) -> None:
        waiters = [asyncio.ensure_future(self._rounds.woken.wait())]
        if extra is not None:
            waiters.append(asyncio.ensure_future(extra.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
