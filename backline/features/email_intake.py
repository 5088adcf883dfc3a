"""Email intake: an SMTP listener that keeps the practice's mail while its normal path is down.

The practice points a backup MX (or its relay's fallback) at ``connections.email_intake``.
Each message for one of the practice's ``domains`` is written to the journal, fsynced,
before the sender hears ``250``; a sender that hears anything else keeps the message and
tries again, so nothing is lost between the two.  Other domains get ``550`` at RCPT: we are
nobody's open relay.  No alert is sent for mail (alerts are for calls); the message joins the inbox
drain in the order received, byte for byte as it came (after SMTP's dot-unstuffing).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from backline.core.connections import DEFAULT_RESERVED_DESCRIPTORS, EmailIntake
from backline.features.journal_disk import JournalDisk
from backline.features.listeners import DescriptorBudget, PublicListener
from backline.features.seam import Context, Feature
from backline.journal import Journal

log = logging.getLogger("backline.email")

MAX_MESSAGE_BYTES = 50 * 1024 * 1024  # what common mail hosts take; more gets 552


class HoldingHandler:
    """aiosmtpd handler: accept the practice's domains, keep each message durably."""

    def __init__(self, journal: Journal, domains: tuple[str, ...],
                 clock: Callable[[], datetime], on_held: Callable[[], None], *,
                 max_recipients: int = 100, disk: JournalDisk | None = None) -> None:
        self.journal = journal
        self.domains = frozenset(d.lower() for d in domains)
        self.max_recipients = max_recipients
        self.disk = disk
        self.turned_away = 0
        self._clock = clock
        self._on_held = on_held

    async def _no_room(self, size: int) -> str | None:
        """The 452 for a message of ``size`` bytes (0: not known yet) when the journal has
        no room for it (backline.features.journal_disk), else None."""
        if self.disk is None:
            return None
        why = await asyncio.to_thread(self.disk.why_no_room, size)
        if not why:
            return None
        self.turned_away += 1
        if self.turned_away in (1, 10, 100) or self.turned_away % 1000 == 0:
            log.warning("email intake: mail turned away (452) %d time(s): %s; calls and SMS "
                        "still journal", self.turned_away, why)
        # RFC 3463 4.3.1 "mail system full": the sender's server keeps it, tries again.
        return "452 4.3.1 insufficient system storage; try again later"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        declared = next((o[5:] for o in mail_options if o.upper().startswith("SIZE=")), "")
        refusal = await self._no_room(int(declared) if declared.isdigit() else 0)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def accepts(self, address: str) -> bool:
        _, at, domain = address.rpartition("@")
        return bool(at) and domain.lower().rstrip(".") in self.domains

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not self.accepts(address):
            return "550 5.1.1 not a domain of this practice; no relaying"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # RFC 5321 4.5.3.1.10: the sender sends the rest in another transaction.
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content
        if data is None or not envelope.rcpt_tos:
            return "554 5.5.1 no message"
        refusal = await self._no_room(len(data))
        if refusal is not None:
            return refusal
        try:
            await asyncio.to_thread(
                self.journal.hold_email, f"email:{uuid.uuid4()}", self._clock(),
                envelope.mail_from or "", tuple(envelope.rcpt_tos), data)
        except Exception as exc:
            # Not kept, so not accepted: the sender's server keeps it and tries again.  Any
            # failure (a JournalError, sqlite3's "disk full", a dropped database connection)
            # is transient from the sender's side: a 5xx would bounce the patient's mail.
            # The type only: a database error's text may quote the message or its sender.
            log.error("email intake: cannot keep a message (%s); answered 451",
                      type(exc).__name__)
            return "451 4.3.0 cannot store the message now; try again later"
        log.info("email intake: a message of %d bytes is kept for the inbox", len(data))
        self._on_held()
        return "250 2.0.0 kept for delivery"


class EmailListener:
    """The SMTP server inside the controller's event loop (no thread: the journal write
    already goes to a worker thread)."""

    def __init__(self, config: EmailIntake, journal: Journal, clock: Callable[[], datetime],
                 on_held: Callable[[], None], disk: JournalDisk | None = None) -> None:
        self.config = config
        self.handler = HoldingHandler(journal, config.domains, clock, on_held,
                                      max_recipients=config.max_recipients, disk=disk)
        self._server: asyncio.Server | None = None
        # Sessions at once, counted against the descriptors the process may give the public
        # (`backline run` sets one shared with the HTTP listeners before start()).
        self.listener = PublicListener("email intake", config.limits,
                                       DescriptorBudget(DEFAULT_RESERVED_DESCRIPTORS),
                                       http=False, idle=False)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        # aiosmtpd logs every SMTP command (``MAIL FROM:<patient address>``) at INFO on
        # ``mail.log``, and the controller logs at INFO: no patient address in the logs.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()

        limits = self.config.limits

        def protocol() -> Any:
            # aiosmtpd's timeout runs from each command it accepts to the next one: a sender
            # dribbling a command, or sending nothing, is cut off after idle_seconds.
            return _IntakeSession(
                limits.body_seconds, self.handler, data_size_limit=MAX_MESSAGE_BYTES,
                enable_SMTPUTF8=True,
                hostname=self.config.domains[0] if self.config.domains else None,
                timeout=limits.idle_seconds, loop=loop)

        self._server = await loop.create_server(self.listener.protocol_factory(protocol),
                                                self.config.listen.host,
                                                self.config.listen.port)
        log.info("email intake on %s for %d domain(s)", self.config.listen,
                 len(self.config.domains))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class _IntakeSession(SMTP):
    """aiosmtpd's session with a deadline of its own for DATA: the whole message within
    ``data_seconds`` of the DATA command (a message sent a line a minute is cut off)."""

    def __init__(self, data_seconds: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data_seconds = data_seconds

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd re-arms its timer before each command with its own timeout; DATA's own
        # replaces it (a private method of aiosmtpd 1.4).
        self._reset_timeout(self._data_seconds)
        await super().smtp_DATA(arg)


class EmailIntakeFeature(Feature):
    def __init__(self, intake: EmailListener) -> None:
        self.intake = intake

    async def start(self) -> None:
        await self.intake.start()

    async def close(self) -> None:
        await self.intake.close()


def build(context: Context) -> EmailIntakeFeature | None:
    """Email sent to the practice, kept (held for the inbox) while the outage lasts; None
    without ``connections.email_intake``."""
    intake = context.directory.connections.email_intake
    if intake is None:
        return None
    return EmailIntakeFeature(EmailListener(intake, context.journal, context.clock,
                                            context.held, context.disk))
