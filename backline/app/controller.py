"""The controller process: composes the journal, the mode, the features and the PBX driver.

The features are listed in one place, ``FEATURES`` (each a ``build(context)``, see
:mod:`backline.features.seam`): adding one is a line there.  Beside them, app-level parts the
PBX drivers call: the mode keeping (:mod:`backline.app.mode_keeper`), the desk-phone PIN
(:mod:`backline.app.desk_phone`) and the PBX's own record (:mod:`backline.app.pbx_record`).
``backline.app.serve`` owns the event loop and the signals; everything started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from backline.app.desk_phone import DeskPhoneAdmin
from backline.app.missing_secrets import warn_missing_secrets
from backline.app.mode_keeper import ModeKeeper, ModeMirror
from backline.app.pbx_record import PbxRecord
from backline.app.refusing_phones import KeptRefusals
from backline.core.connections import DEFAULT_REFUSALS_PER_MINUTE, AsteriskPbx, Secret
from backline.core.conversations import ConversationBook
from backline.core.emergency import EmergencyCall
from backline.core.hours import HoursOverride
from backline.core.model import Directory
from backline.core.outage import Mode, ModeState
from backline.core.ownership import OwnershipBook
from backline.core.refusals import RefusalTally
from backline.core.wire import insecure
from backline.features import (
    audit_upkeep,
    conversations,
    email_intake,
    emergency_notices,
    provisioning,
    retention,
)
from backline.features.alerts import feature as alerts
from backline.features.alerts.service import Notifier
from backline.features.audit_upkeep import AuditUpkeep
from backline.features.conversations import ConversationMembers
from backline.features.email_intake import EmailListener
from backline.features.emergency_notices import EmergencyNotices
from backline.features.inbox import feature as inbox
from backline.features.inbox.service import InboxDrain, process_holder, why_blocked
from backline.features.journal_disk import JournalDisk
from backline.features.notices import feature as notices
from backline.features.notices.service import OutageNotices
from backline.features.refusal_gate import RefusalGate
from backline.features.reminders import feature as reminders
from backline.features.reminders.service import OutageReminders
from backline.features.seam import Build, Context, Feature
from backline.features.sms import feature as sms
from backline.features.sms.auto_replies import AutoReplies
from backline.features.status.health import Health, idle, off
from backline.features.status.metrics import Metrics
from backline.features.status.page import HoursRow, hours_rows
from backline.features.status.server import make_status_app, public_app
from backline.features.texting import feature as texting
from backline.features.texting.sender import StaffTexts
from backline.features.voicemail import emails as voicemail_emails
from backline.journal import Journal, JournalError, NewAttempt
from backline.journal.writer import AttemptWriter

__all__ = ["FEATURES", "Controller", "ModeMirror", "config_path"]

log = logging.getLogger("backline.controller")

FEATURES: tuple[Build, ...] = (
    conversations.build,      # people added to one conversation alone (and its API)
    emergency_notices.build,  # every 911 call journaled and its on-site notice sent
    alerts.build,             # backup alerts and their link pages
    reminders.build,          # while an outage stays engaged, a reminder every few hours
    notices.build,            # a notice when an outage starts and when it ends
    email_intake.build,       # email kept while the outage lasts
    inbox.build,              # held attempts and emails delivered once the mode is normal
    sms.build,                # the SMS webhook and the outage auto-reply
    texting.build,            # staff text from practice numbers (API, sender, status)
    audit_upkeep.build,       # refusal counts written, the audit log pruned by age
    provisioning.build,       # desk phones' provisioning files over HTTPS
    voicemail_emails.build,   # members who opted in told of each voicemail, by a link
    retention.build,          # delivered faxes' and voicemail's files removed after N days
)
"""Every feature, in the order they start (and close)."""

F = TypeVar("F", bound=Feature)


class Controller:
    """Holds the practice's state in memory, keeps the mode agreed between the journal and
    the PBX, journals every attempt and tells the features."""

    def __init__(self, directory: Directory, journal: Journal, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.directory = directory
        self.journal = journal
        # Read by the features and their pages (tests move it past a link's lifetime).
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.book = OwnershipBook(directory)
        self.conversations = ConversationBook()
        pbx = directory.connections.pbx
        self.node = pbx.node if isinstance(pbx, AsteriskPbx) else ""  # stamped on attempts
        self.metrics = Metrics(backlog=journal.held)
        # Desk phones that refused the encrypted call they were rung with (the Asterisk
        # driver tells; a reload clears it; kept across restarts): status, /metrics.
        self.refusing_encryption = KeptRefusals(journal, directory)
        self.metrics.refusing_encryption(lambda: len(self.refusing_encryption.names()))
        self.writer = AttemptWriter(journal)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        # What ops watch besides the mode (the status page, /status.json); each feature
        # adds its own line.
        self.health: dict[str, Health] = {
            "pbx_link": idle("not connected yet") if pbx is not None
            else off("connections.pbx is not configured")}
        pbx_label = (self.node or pbx.kind) if pbx is not None else "none"
        self.holder = process_holder()  # this process, in the journal's `controllers`
        # The journal's free space (status page, /metrics) and held mail's budget in it.
        self.journal_disk = JournalDisk.of(journal, directory.connections.email_intake,
                                           journal.held_email_bytes)
        self.metrics.journal_disk(self.journal_disk.free_bytes, self.journal_disk.floor)
        self.modes = ModeKeeper(
            journal, lambda: self.clock(), self.metrics, self.health, holder=self.holder,
            node=self.node or (pbx_label if pbx is not None else ""), pbx_label=pbx_label,
            inbox_blocked=why_blocked(directory), on_change=self._mode_changed,
            each_round=self._each_round)
        self.desk_phones = DeskPhoneAdmin(directory, journal, self.book, lambda: self.clock(),
                                          self.modes)
        # Refused public requests, per source and minute (backline.core.refusals).
        pages = directory.connections.pages
        self.refusals = RefusalGate(RefusalTally(
            pages.refusals_per_minute if pages is not None else DEFAULT_REFUSALS_PER_MINUTE),
            lambda: self.clock())
        # Set by the first import of the PBX's record (after the first PBX login): the end
        # notice waits for it, so it counts what the PBX took alone (the fail-safe).
        self.record_imported = asyncio.Event()
        if pbx is None:
            self.record_imported.set()
        context = Context(
            directory, journal, lambda: self.clock(), self.node, self.book, self.conversations,
            self.journal_disk, mode=lambda: self.modes.state, changed=lambda: self.modes.changed,
            record_attempt=self.record_attempt, held=self._items_held, health=self.health,
            secret=self._secret, refusals=self.refusals, record_imported=self.record_imported,
            forget_voicemail=lambda ids: self.pbx_record.forget_voicemail(ids))
        self.features: list[Feature] = [
            f for f in (build(context) for build in FEATURES) if f is not None]
        self.pbx_record = PbxRecord(directory, journal, self.record_attempt,
                                    self._late_emergency_call, self.mode, lambda: self.clock(),
                                    book=self.book, node=self.node,
                                    imported=self.record_imported, health=self.health)
        # The PBX drivers call these.
        self.desk_phone_switch = self.desk_phones.desk_phone_switch
        self.desk_phone_hours = self.desk_phones.desk_phone_hours
        self.import_pbx_record = self.pbx_record.import_pbx_record
        self.faxes = self.pbx_record.faxes
        self.voicemail = self.pbx_record.voicemail
        # The mode keeping, as the drivers, the CLI and the tests use it.
        self.switch = self.modes.switch
        self.sync_once = self.modes.sync_once
        self.keep_mode = self.modes.keep_mode
        self.wait_mode = self.modes.wait_mode
        self.wait_rounds = self.modes.wait_rounds
        self.attach = self.modes.attach

    def feature(self, kind: type[F]) -> F | None:
        """The running feature of ``kind``, if it is configured."""
        return next((f for f in self.features if isinstance(f, kind)), None)

    def _secret(self, secret: Secret, what: str, effect: str) -> str:
        from backline.app.secrets import SecretMissing, read_secret

        try:
            return read_secret(secret, what)
        except SecretMissing as exc:
            log.error("%s: %s", exc, effect)
            return ""

    def warn_missing_secrets(self) -> list[str]:
        """Log (once, at start) each feature a missing secret turns off; return the lines."""
        return warn_missing_secrets(self.directory)

    async def start(self) -> None:
        """Start every feature's background work, and the retries of the PBX's fax spool."""
        self.warn_missing_secrets()
        for feature in self.features:
            await feature.start()
        self._spawn(self.pbx_record.retry_spooled_faxes(self._closing))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing.set()
        await self.desk_phones.close()
        # Stopping: the CLI no longer waits on this controller to apply a switch.
        with contextlib.suppress(JournalError):
            await asyncio.to_thread(self.journal.forget_controller, self.holder)
        await self.writer.close()
        await self.refusing_encryption.written()
        for feature in self.features:
            await feature.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the mode ------------------------------------------------------------------------

    def mode(self) -> Mode:
        return self.modes.state.mode

    @property
    def state(self) -> ModeState:
        return self.modes.state

    @state.setter
    def state(self, state: ModeState) -> None:  # tests put the controller in a mode by hand
        self.modes.state = state

    @property
    def hours_override(self) -> HoursOverride | None:
        return self.modes.hours_override

    @property
    def failed_rounds(self) -> int:
        return self.modes.failed_rounds

    async def _each_round(self) -> None:
        for feature in self.features:
            await feature.each_round()

    def _mode_changed(self, state: ModeState) -> None:
        for feature in self.features:
            feature.mode_changed(state)

    # -- attempts ------------------------------------------------------------------------

    async def record_attempt(self, attempt: NewAttempt, *, urgent: bool = True) -> bool:
        """Write ``attempt`` durably; True if it was new (not a repeat of its key).

        Commits are shared (backline.journal.writer); ``urgent=False`` when nobody waits on
        this one (a normal-mode call journaled after its decision), so it may wait a moment
        for company.
        """
        if self.node and not attempt.node:  # every path (calls, CDR, faxes, SMS) comes here
            attempt = dataclasses.replace(attempt, node=self.node)
        recorded, new = await self.writer.record(attempt, urgent=urgent)
        if new:
            self.metrics.attempt(attempt.kind, attempt.mode, attempt.outcome)
            for feature in self.features:
                feature.attempt_recorded(recorded)  # queues only: the PBX is waiting
        return new

    async def record_later(self, attempt: NewAttempt) -> bool:
        """``record_attempt`` for an attempt nobody waits on: it may share a later commit."""
        return await self.record_attempt(attempt, urgent=False)

    def _items_held(self) -> None:
        for feature in self.features:
            feature.items_held()

    async def emergency_call(self, call: EmergencyCall) -> bool:
        """The PBX placed a 911 call (it did not wait for us): journal it and notify the
        people on site, once."""
        return await self.emergency.call_placed(call, late=False)

    async def _late_emergency_call(self, call: EmergencyCall) -> bool:
        return await self.emergency.call_placed(call, late=True)

    # -- HTTP ----------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        """The controller's public HTTP face (connections.pages.listen, which the SMS
        provider and staff's alert links reach): what each feature serves there; anything
        else, /status and /metrics included, is a bare 404 (they are on ``status_app``)."""
        app = public_app()
        for feature in self.features:
            routes = feature.routes()
            app.add_routes(routes.public)
            for prefix, sub in routes.public_apps:
                app.add_subapp(prefix, sub)
        return app

    def status_app(self) -> web.Application:
        """What ops read (connections.status.listen): /status, /status.json, /metrics, and
        what the features serve there; behind its bearer token when one is configured."""
        app = make_status_app(self.journal, self.metrics, self.directory.practice.name,
                              self.directory.practice.timezone, self.journal.held,
                              lambda: datetime.now(UTC), health=lambda: self.health | {
                                  "journal_disk": self.journal_disk.health(self.clock()),
                                  **self.pbx_record.folder_locks()},
                              emergency_calls=lambda: self.journal.emergency_calls(10),
                              token=self._status_token(), hours=self.hours_now,
                              insecure=lambda: insecure(self.directory.connections.pbx,
                                                        self.directory.users),
                              refusing_encryption=self.refusing_encryption.names)
        for feature in self.features:
            app.add_routes(feature.routes().status)
        return app

    def hours_now(self) -> list[HoursRow]:
        """The practice's (and numbers' own) hours at the controller's clock, with the
        override it runs by: what the status page shows."""
        return hours_rows(self.directory, self.clock(), self.hours_override)

    def _status_token(self) -> str | None:
        """None: no token configured; "" (every request refused) when it cannot be read
        (warned of at start, with the other missing secrets)."""
        from backline.app.secrets import SecretMissing, read_secret

        status = self.directory.connections.status
        if status is None or not (status.token.env or status.token.file):
            return None
        try:
            return read_secret(status.token, "connections.status.token")
        except SecretMissing:
            return ""

    # -- the features and parts, by name (the drivers, serve and the tests use them) -----

    @property
    def emergency(self) -> EmergencyNotices:
        found = self.feature(emergency_notices.Emergency)
        assert found is not None, "the emergency notices are in FEATURES"
        return found.service

    @property
    def conversation_members(self) -> ConversationMembers:
        found = self.feature(conversations.Conversations)
        assert found is not None, "the conversation members are in FEATURES"
        return found.members

    @property
    def notifier(self) -> Notifier | None:
        found = self.feature(alerts.Alerts)
        return found.service if found is not None else None

    @property
    def reminders(self) -> OutageReminders | None:
        found = self.feature(reminders.Reminders)
        return found.service if found is not None else None

    @property
    def notices(self) -> OutageNotices | None:
        found = self.feature(notices.Notices)
        return found.service if found is not None else None

    @property
    def inbox(self) -> InboxDrain | None:
        found = self.feature(inbox.InboxDelivery)
        return found.service if found is not None else None

    @property
    def email_intake(self) -> EmailListener | None:
        found = self.feature(email_intake.EmailIntakeFeature)
        return found.intake if found is not None else None

    @property
    def audit_upkeep(self) -> AuditUpkeep:
        found = self.feature(audit_upkeep.AuditUpkeepFeature)
        assert found is not None, "the audit upkeep is in FEATURES"
        return found.service

    @property
    def replies(self) -> AutoReplies:
        found = self.feature(sms.Sms)
        assert found is not None, "SMS is in FEATURES"
        return found.service

    @property
    def texts(self) -> StaffTexts:
        found = self.feature(texting.Texting)
        assert found is not None, "texting is in FEATURES"
        return found.service

    @property
    def mirror(self) -> ModeMirror | None:
        return self.modes.mirror

    @property
    def cdr_path(self) -> Path | None:
        return self.pbx_record.cdr_path

    @cdr_path.setter
    def cdr_path(self, path: Path | None) -> None:
        self.pbx_record.cdr_path = path


def config_path(directory: Directory) -> str:
    """The config file's absolute path, however it was named on the command line."""
    return str(Path(directory.source).resolve())

