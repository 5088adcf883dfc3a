"""An admin's desk phone switching the outage (``*28``/``*29``) or forcing the hours
(``*26``/``*27``) with the PIN: who may, the lockout after wrong PINs, and the audit of each.

The judgement of a PIN is pure (:mod:`backline.core.pin_lockout`); this module holds the
tries per desk phone, reads the PIN the config names, writes the audit log and tells the
alert recipients of a lockout.  Never the digits, anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import string
from collections.abc import Callable
from datetime import datetime, timedelta

from backline.app.mode_keeper import ModeKeeper
from backline.core.hours import HoursOverride, HoursState
from backline.core.model import Directory
from backline.core.outage import AlreadyInMode, Mode, Via
from backline.core.ownership import OwnershipBook
from backline.core.pin_lockout import PinJudgement, PinPolicy, PinVerdict
from backline.journal import AuditEntry, Journal

log = logging.getLogger("backline.controller")


class DeskPhoneAdmin:
    """``desk_phone_switch`` and ``desk_phone_hours`` are what the PBX drivers call."""

    def __init__(self, directory: Directory, journal: Journal, book: OwnershipBook,
                 clock: Callable[[], datetime], keeper: ModeKeeper) -> None:
        self.directory = directory
        self.journal = journal
        self.book = book
        self._clock = clock
        self.keeper = keeper
        # Wrong outage PINs per desk phone (backline.core.pin_lockout), kept in the journal so
        # that a restart does not end a lockout.  Each try is judged in one journal
        # transaction: the controllers sharing the journal cannot lose each other's counts.
        self.pin_policy = PinPolicy()
        self._pin_alerts: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Wait for the lockout emails on their way."""
        if self._pin_alerts:
            await asyncio.gather(*self._pin_alerts, return_exceptions=True)

    async def desk_phone_switch(self, desk_phone: str, to: Mode, pin: str) -> bool:
        """An admin's desk phone with the PIN switches the mode; anything else is refused and
        recorded (who tried, from which phone; never the digits)."""
        user = await self._admin_by_pin(desk_phone, pin, f"outage.{to.value}", "outage switch")
        if user is None:
            return False
        with contextlib.suppress(AlreadyInMode):  # the mode the user wanted holds already
            await self.keeper.switch(to, by=user, via=Via.DESK_PHONE,
                                     reason=f"switched from desk phone {desk_phone}")
        return True

    async def desk_phone_hours(self, desk_phone: str, to: HoursState, pin: str) -> bool:
        """An admin's desk phone with the PIN (``*26``/``*27``) forces the practice closed or
        open until the next scheduled change; journaled and audited like an outage switch."""
        user = await self._admin_by_pin(desk_phone, pin, f"hours.{to.value}", "hours override")
        if user is None:
            return False
        override = HoursOverride(to, self._clock(), user, Via.DESK_PHONE.value)
        await asyncio.to_thread(self.journal.record_hours_override, override)
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            override.at, user, f"hours.{to.value}",
            f"forced {to.value} from desk phone {desk_phone[:40]} until the next scheduled "
            "change"))
        self.keeper.hours_override = override
        log.warning("hours forced %s by %s from desk phone %s until the next scheduled change",
                    to.value, user, desk_phone[:40])
        return True

    async def _admin_by_pin(self, desk_phone: str, pin: str, action: str, what: str
                            ) -> str | None:
        """The admin user of ``desk_phone`` if ``pin`` is right and the phone is not locked
        out; otherwise None, the refusal audited as ``ACTION.refused`` (never the digits)."""
        user = self.book.user_of_phone(desk_phone)
        admin = user is not None and any(u.id == user and u.admin for u in self.directory.users)
        expected = self.outage_pin()
        pin_ok = bool(expected) and hmac.compare_digest(pin.encode(), expected.encode())
        now = self._clock()
        phone = desk_phone[:40]
        judged: PinJudgement | None = None
        if admin:
            judged = await asyncio.to_thread(self.journal.judge_pin_try, phone, pin_ok, now,
                                             self.pin_policy)
        if judged is None or judged.verdict is not PinVerdict.ACCEPTED:
            why = "not an admin's desk phone" if judged is None else judged.verdict.value
            await asyncio.to_thread(self.journal.audit, AuditEntry(
                now, f"desk-phone:{phone}", f"{action}.refused", why))
            log.warning("%s refused from desk phone %s: %s", what, phone, why)
            if judged is not None and judged.lockout is not None:
                await self._pin_lockout(phone, user or "", judged.record.failures,
                                        judged.lockout, now)
            return None
        return user

    async def _pin_lockout(self, phone: str, user: str, failures: int, lockout: timedelta,
                           now: datetime) -> None:
        """A desk phone was just locked out: audited, logged loudly, and the alert recipients
        told by email when SMTP is configured (off the caller's path).  Never the digits."""
        seconds = int(lockout.total_seconds())
        detail = f"{failures} wrong PINs in a row; locked out for {seconds} s"
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            now, f"desk-phone:{phone}", "outage.pin.lockout", detail))
        log.error("DESK PHONE LOCKED OUT: %s (user %s) gave %d wrong outage PINs in a row; "
                  "refused for %d s whatever it dials. If that was not the user, someone is "
                  "guessing the PIN: change backup.pin", phone, user, failures, seconds)
        task = asyncio.create_task(self._email_pin_lockout(phone, user, detail, now))
        self._pin_alerts.add(task)
        task.add_done_callback(self._pin_alerts.discard)

    async def _email_pin_lockout(self, phone: str, user: str, detail: str,
                                 now: datetime) -> None:
        from email.message import EmailMessage
        from email.policy import SMTP
        from email.utils import format_datetime

        from backline.features.alerts.service import mailer_for
        from backline.features.sending.mail import MailError

        smtp, emails = self.directory.connections.smtp, self.directory.backup.alerts.emails
        if smtp is None or not emails:
            return
        mailer = mailer_for(self.directory, "desk-phone lockout alert")
        if mailer is None:
            return
        practice = " ".join(self.directory.practice.name.split())[:60]
        try:
            for to in emails:
                message = EmailMessage(policy=SMTP)
                message["From"] = smtp.sender
                message["To"] = to
                message["Subject"] = f"Desk phone {phone} locked out: wrong outage PINs"
                message["Date"] = format_datetime(now)
                message["Message-ID"] = lockout_message_id()
                message["Auto-Submitted"] = "auto-generated"
                message.set_content(
                    f"{practice}: desk phone {phone} (user {user}) tried to switch the outage "
                    "mode with the "
                    f"wrong PIN: {detail}.\n\nIf that was not the user, someone is guessing the "
                    "outage PIN: change backup.pin. Each try is in the audit log.\n")
                await mailer.send(message)
        except MailError as exc:
            log.error("the desk-phone lockout alert was not emailed: %s", exc)
        finally:
            await mailer.close()

    def outage_pin(self) -> str:
        from backline.app.secrets import SecretMissing, read_secret

        if not self.directory.backup.pin:
            return ""
        try:
            return read_secret(self.directory.backup.pin, "backup.pin")
        except SecretMissing as exc:
            log.error("%s: desk-phone switching is off", exc)
            return ""


def lockout_message_id() -> str:
    """Random letters, no digits: ``make_msgid`` puts the clock's digits in it, and a PIN is a
    few digits (at 1796432171 s past the epoch, every lockout email carried ``4321``)."""
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(26))
    return f"<pin-lockout.{letters}@backline.invalid>"
