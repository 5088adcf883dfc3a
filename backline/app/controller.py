"""The controller process: wires the journal, the mode, the core and the PBX driver.

``run_controller`` owns the event loop and the signals; everything it starts it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, assert_never

from aiohttp import web

from backline.core import e164
from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.core.conversations import ConversationBook
from backline.core.emergency import EmergencyCall
from backline.core.hours import HoursOverride, HoursState
from backline.core.mode_sync import Agree, InSync, PushToPbx, RecordConsoleSwitch, reconcile
from backline.core.model import Directory
from backline.core.outage import AlreadyInMode, Mode, ModeChange, ModeState, Via, switch, switch_key
from backline.core.ownership import OwnershipBook
from backline.core.pin_lockout import PinJudgement, PinPolicy, PinRecord, PinVerdict, judge_pin
from backline.features.alerts.service import Notifier, notifier_for, why_no_alerts
from backline.features.conversations import ConversationMembers
from backline.features.email_intake import EmailListener
from backline.features.emergency_notices import EmergencyNotices, notices_for
from backline.features.inbox.service import InboxDrain, inbox_for, process_holder
from backline.features.journal_disk import JournalDisk
from backline.features.links.tokens import LINK_PREFIX
from backline.features.reminders.service import OutageReminders, reminders_for
from backline.features.sms.auto_replies import AutoReplies
from backline.features.sms.reply import ReplyPlan, auto_reply
from backline.features.sms.twilio import InboundSms
from backline.features.sms.webhook import make_sms_routes
from backline.features.status.health import Health, Verdict, idle, off
from backline.features.status.metrics import Metrics
from backline.features.status.page import HoursRow, hours_rows
from backline.features.status.server import make_status_app, public_app
from backline.journal import (
    AlertChannel,
    Attempt,
    AttemptKind,
    AuditEntry,
    ControllerReport,
    Delivery,
    Journal,
    JournalError,
    NewAttempt,
    Outcome,
    StaleMode,
)
from backline.journal.writer import AttemptWriter
from backline.localpbx.whereabouts import NotAsteriskSettings, parse_settings, root_of, under
from backline.pbx.asterisk import cdr
from backline.pbx.fax_desk import DEFAULT_FAX_DIR, FaxIntake
from backline.pbx.freeswitch import cdr as freeswitch_cdr
from backline.pbx.ports import FAX_CONTEXTS, CdrRow, PbxError

log = logging.getLogger("backline.controller")

MODE_POLL_SECONDS = 1.0
# A running controller rewrites its row in the journal when what it reports changes, and at
# least this often; the CLI counts a controller unseen for three times as long as gone.
REPORT_EVERY = timedelta(seconds=10)
FORGET_AFTER = timedelta(days=1)  # rows of controllers that never said goodbye (SIGKILL)
# How often faxes left in the PBX's spool (storage failed during the call) are tried again,
# besides at every AMI login: a fax is converted within this long of storage coming back.
FAX_RETRY_SECONDS = 30.0


class Controller:
    """Holds the practice's state in memory and keeps the mode agreed between the journal
    (CLI, status page) and the PBX (console, dialplan, lamps)."""

    def __init__(self, directory: Directory, journal: Journal, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.directory = directory
        self.journal = journal
        # Read by the alerts and their link pages (tests move it past a link's lifetime).
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.book = OwnershipBook(directory)
        self.conversations = ConversationBook()
        # People added to one conversation alone: read now, and again whenever the journal
        # says they changed (a CLI change reaches a running controller within a round).
        self.conversation_members = ConversationMembers(journal, self.book, self.conversations,
                                                        lambda: self.clock())
        self.conversation_members.load()
        self.state: ModeState = journal.mode_state()
        # The admins' latest override of the hours (*26/*27); backline.core.hours says whether it
        # still holds at a call's moment.
        self.hours_override: HoursOverride | None = journal.hours_override()
        self.mirror: ModeMirror | None = None
        pbx = directory.connections.pbx
        # Where the PBX's call record is read: the config's, else asked of Asterisk at every
        # AMI login (learn_pbx_files); `pbx_root` is the root `backline up` runs it in.
        self.cdr_path: Path | None = Path(pbx.cdr_file) if pbx is not None and pbx.cdr_file \
            else None
        self.pbx_root: Path | None = None
        self.pbx_settings: Callable[[], Awaitable[str]] | None = None
        # Each PBX writes its CDR its own way; both come out as CdrRow.
        self.cdr_rows: Callable[[str], Iterable[CdrRow]] = cdr.parse
        self.cdr_emergency: Callable[[str], Iterable[EmergencyCall]] = cdr.emergency_calls
        if isinstance(pbx, FreeswitchPbx):
            self.cdr_rows = freeswitch_cdr.parse
            self.cdr_emergency = lambda _: ()
        self.node = pbx.node if isinstance(pbx, AsteriskPbx) else ""  # stamped on attempts
        # Faxes: kept in connections.pbx.fax_dir; `faxes.spool` is where this controller reads
        # the PBX's spool (`backline up` points it inside the Asterisk root).
        self.faxes = FaxIntake(
            Path(pbx.fax_dir if pbx is not None else DEFAULT_FAX_DIR),
            directory.practice.timezone, self.record_attempt, journal.attempt, self.mode,
            clock=lambda: self.clock(), correct=journal.correct_fax)
        if isinstance(pbx, FreeswitchPbx):  # rxfax writes there, on this host
            self.faxes.spool = Path(pbx.fax_spool)
        elif isinstance(pbx, AsteriskPbx) and pbx.spool_dir:
            self.faxes.spool = Path(pbx.spool_dir)
        self._changed = asyncio.Event()
        self.metrics = Metrics(backlog=journal.held)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.metrics.set_engaged(self.state.mode is Mode.OUTAGE)
        self.notifier: Notifier | None = notifier_for(directory, journal, self.clock)
        self.writer = AttemptWriter(journal)
        # While an outage stays engaged, a reminder every backup.reminder_hours.
        self.reminders: OutageReminders | None = reminders_for(
            directory, journal, self.clock, lambda: self.state, lambda: self._changed)
        # Held attempts and emails go to the inbox whenever the mode is normal.
        self.inbox: InboxDrain | None = inbox_for(directory, journal, self.mode, self.clock,
                                                  node=self.node)
        # The outage SMS auto-reply: journaled with its state, sent and retried by a task.
        self.replies = AutoReplies(journal, directory.connections.sms_gateway,
                                   directory.backup.sms_reply, self.clock, self.mode,
                                   self._reply_plan)
        # Every 911 call is journaled and its on-site notice sent, once (Kari's Law).
        self.emergency: EmergencyNotices = notices_for(directory, journal, self.clock,
                                                       node=self.node)
        intake = directory.connections.email_intake
        # The journal's free space (status page, /metrics) and held mail's budget in it.
        self.journal_disk = JournalDisk.of(journal, intake, journal.held_email_bytes)
        self.metrics.journal_disk(self.journal_disk.free_bytes, self.journal_disk.floor)
        self.email_intake = EmailListener(intake, journal, self.clock, self.wake_inbox,
                                          self.journal_disk) if intake is not None else None
        # What ops watch besides the mode (the status page, /status.json).
        self.holder = process_holder()  # this process, in the journal's `controllers`
        self.pbx_label = (self.node or pbx.kind) if pbx is not None else "none"
        self.inbox_blocked = self._why_inbox_blocked()
        self.health: dict[str, Health] = {
            "pbx_link": idle("not connected yet") if pbx is not None
            else off("connections.pbx is not configured"),
            "alerts": _alerts_health(directory, self.notifier),
            "inbox": off(f"held items cannot be delivered: {self.inbox_blocked}")
            if self.inbox is None else idle("nothing delivered yet"),
        }
        self._alert_lanes: dict[AlertChannel, str] = {}  # each channel's last error ("")
        if self.notifier is not None:
            self.notifier.on_result = self._alert_result
        if self.inbox is not None:
            self.inbox.on_result = self._inbox_result
        self.failed_rounds = 0
        self._round_ended = asyncio.Event()
        self._pbx_switch = ""  # the switch the PBX was last seen holding (outage.switch_key)
        self._pbx_at: datetime | None = None
        self._last_report: tuple[str, str, str] | None = None
        self._last_report_at: datetime | None = None
        # Wrong outage PINs per desk phone (backline.core.pin_lockout), in this process's memory:
        # a restart forgets them, which an attacker at a desk phone cannot bring about.
        self.pin_policy = PinPolicy()
        self._pins: dict[str, PinRecord] = {}
        self._pin_alerts: set[asyncio.Task[None]] = set()

    def _why_inbox_blocked(self) -> str:
        """Why held items cannot be delivered ("" when they can)."""
        from backline.app.secrets import SecretMissing, read_secret

        inbox = self.directory.connections.inbox
        if inbox is None or not inbox.url:
            return "connections.inbox is not configured"
        if inbox.token:
            try:
                read_secret(inbox.token, "connections.inbox.token")
            except SecretMissing as exc:
                return f"the controller has no inbox token ({exc})"
        return ""

    def _alert_result(self, channel: AlertChannel, ok: bool, why: str) -> None:
        """Alerts are getting through while every channel's last try worked (email and SMS
        run side by side: one working must not hide the other failing)."""
        now = self.clock()
        self._alert_lanes[channel] = "" if ok else why
        failing = [c.value for c, error in self._alert_lanes.items() if error]
        current = self.health["alerts"]
        if current.verdict is Verdict.OFF:
            return
        if ok:
            current = dataclasses.replace(current, last_success=now)
        else:
            current = dataclasses.replace(current, last_error=f"{channel.value}: {why}",
                                          last_error_at=now)
        self.health["alerts"] = dataclasses.replace(
            current, verdict=Verdict.FAILING if failing else Verdict.OK,
            says=f"alerts are not getting through by {' and '.join(failing)}" if failing
            else "alerts are being delivered")

    def _inbox_result(self, ok: bool, why: str) -> None:
        now, current = self.clock(), self.health["inbox"]
        self.health["inbox"] = current.succeeded(now, "held items are being delivered") if ok \
            else current.failed(now, why, "held items are not getting through")

    def warn_missing_secrets(self) -> list[str]:
        """Log (once, at start) each feature a missing secret turns off; return the lines."""
        from backline.app.secrets import SecretMissing, read_secret

        d = self.directory
        checks = []
        gateway = d.connections.sms_gateway
        if gateway is not None:
            if d.connections.pages is not None:
                checks.append(("inbound SMS", gateway.signing_secret,
                               "connections.sms_gateway.signing_secret",
                               "every inbound SMS webhook is refused (403)"))
            checks.append(("SMS sending", gateway.token, "connections.sms_gateway.token",
                           "automatic replies wait (retried until it is set) and alerts go by "
                           "email only"))
        status = d.connections.status
        if status is not None and (status.token.env or status.token.file):
            checks.append(("the status listener", status.token, "connections.status.token",
                           "every request for /status, /status.json and /metrics gets 401"))
        inbox = d.connections.inbox
        if inbox is not None and inbox.url and inbox.token:
            checks.append(("inbox delivery", inbox.token, "connections.inbox.token",
                           "held items cannot be delivered to the inbox"))
        lines = []
        if not d.backup.pin:
            lines.append("desk-phone outage switching (*28/*29) is off: backup.pin_env is "
                         "not set in the config")
        else:
            checks.append(("desk-phone outage switching (*28/*29)", d.backup.pin,
                           "backup.pin", "admins cannot switch the outage from a desk phone"))
        for feature, secret, what, effect in checks:
            try:
                read_secret(secret, what)
            except SecretMissing as exc:
                lines.append(f"{feature} is off: {exc}: {effect}")
        for line in lines:
            log.warning("%s", line)
        return lines

    def wake_inbox(self) -> None:
        if self.inbox is not None:
            self.inbox.wake()

    async def start(self) -> None:
        """Start the background work: emergency notices, backup alerts, outage reminders,
        SMS replies, the email intake and the inbox drain."""
        self.warn_missing_secrets()
        self.emergency.start()
        if self.notifier is not None:
            self.notifier.start()
        if self.reminders is not None:
            self.reminders.start()
        if self.email_intake is not None:
            await self.email_intake.start()
        if self.inbox is not None:
            self.inbox.start()
        self.replies.start()
        self._spawn(self._retry_spooled_faxes())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry_spooled_faxes(self) -> None:
        """Every FAX_RETRY_SECONDS until close(): faxes left in the PBX's spool."""
        while not self._closing.is_set():
            try:
                await self.faxes.take_left_in_spool()
            except (OSError, JournalError) as exc:
                log.error("faxes left in the PBX's spool could not be taken in: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), FAX_RETRY_SECONDS)

    def mode(self) -> Mode:
        return self.state.mode

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
            if self.notifier is not None:
                self.notifier.attempt_recorded(recorded)  # queues only: the PBX is waiting
            if recorded.delivery is Delivery.HELD and self.state.mode is Mode.NORMAL:
                self.wake_inbox()  # held in normal mode (an SMS): deliver it now, not later
        return new

    async def emergency_call(self, call: EmergencyCall) -> bool:
        """The PBX placed a 911 call (it did not wait for us): journal it and notify the
        people on site, once."""
        return await self.emergency.call_placed(call, late=False)

    async def record_later(self, attempt: NewAttempt) -> bool:
        """``record_attempt`` for an attempt nobody waits on: it may share a later commit."""
        return await self.record_attempt(attempt, urgent=False)

    async def learn_pbx_files(self) -> None:
        """Ask the PBX where it keeps its call record and fax spool (unless the config names
        them), as seen from this host; say loudly when the call record cannot be read, since
        calls the PBX answers while the controller is away would then never be journaled."""
        pbx = self.directory.connections.pbx
        if not isinstance(pbx, AsteriskPbx) or self.pbx_settings is None:
            return
        try:
            dirs = parse_settings(await self.pbx_settings())
        except (PbxError, NotAsteriskSettings) as exc:
            log.error("could not ask Asterisk where it keeps its call records and faxes (%s)%s",
                      exc, "" if self.cdr_path else ": calls it answers while the controller "
                      "is away cannot be imported")
            return
        root = self.pbx_root or await asyncio.to_thread(root_of, dirs.pid_file) or Path("/")
        if not pbx.cdr_file:
            self.cdr_path = under(root, dirs.cdr_file)
        if not pbx.spool_dir:
            self.faxes.spool = under(root, dirs.spool)
        cdr_path, spool = self.cdr_path, self.faxes.spool
        assert cdr_path is not None
        if not dirs.cdr_enabled:
            log.error("Asterisk writes no call records (CDR disabled): calls it answers while "
                      "the controller is away cannot be imported")
        elif not await asyncio.to_thread(cdr_path.parent.is_dir):
            log.error("the PBX's call record %s cannot be found (no such directory): calls it "
                      "answers while the controller is away cannot be imported; set "
                      "connections.pbx.cdr_file to where this host sees it", cdr_path)
        if not await asyncio.to_thread(spool.is_dir):
            log.error("the PBX's fax spool %s cannot be found: faxes it receives while the "
                      "controller is away cannot be taken in; set connections.pbx.spool_dir",
                      spool)
        log.info("the PBX's call record is %s, its fax spool %s", cdr_path, spool)

    async def import_pbx_record(self) -> int:
        """Journal the calls the PBX answered on its own (its CDR); return how many were new.
        Then take in faxes left in its spool.  Run after every AMI login.

        Safe to run any number of times: each call's key is the one the controller uses
        when it is up, so nothing is recorded twice.
        """
        await self.learn_pbx_files()
        new = await self._import_cdr()
        await self.faxes.take_left_in_spool()
        return new

    async def _import_cdr(self) -> int:
        if self.cdr_path is None:
            return 0
        try:
            text = await asyncio.to_thread(self.cdr_path.read_text, "utf-8", "replace")
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("cannot read the PBX's call record %s: %s", self.cdr_path, exc)
            return 0
        late_911 = 0
        for call in self.cdr_emergency(text):  # first: people on site are waiting
            try:
                late_911 += await self.emergency.call_placed(call, late=True)
            except JournalError as exc:
                log.error("EMERGENCY: a 911 call in the PBX's record could not be journaled "
                          "(%s); the next import tries again", exc)
        if late_911:
            log.warning("%d emergency call(s) placed while the controller was away: their "
                        "notices go out now, late", late_911)
        rows = list(self.cdr_rows(text))
        history = await asyncio.to_thread(self.journal.mode_history, 1000)
        new = 0
        for row in rows:
            if row.context in FAX_CONTEXTS:  # converted and stored too, not only journaled
                recorded = await self.faxes.import_row(row, mode_at(history, row.start))
            else:
                recorded = await self.record_attempt(
                    cdr.attempt_for(row, lambda at: mode_at(history, at)))
            if recorded:
                new += 1
        if new:
            log.warning("%d call(s) answered by the PBX while the controller was away are now "
                        "journaled", new)
        return new

    # -- SMS (Twilio-format webhook in, gateway out) ----------------------------------------

    def web_app(self) -> web.Application:
        """The controller's public HTTP face (connections.pages.listen, which the SMS
        provider and staff's alert links reach): the SMS webhook and the alert link pages
        (under /a/), each if configured; anything else, /status and /metrics included, is a
        bare 404 (they are on ``status_app``)."""
        app = public_app()
        gateway = self.directory.connections.sms_gateway
        pages = self.directory.connections.pages
        if gateway is not None and pages is not None:
            app.add_routes(make_sms_routes(pages.base_url, self._sms_signing_secret,
                                           self.on_sms, self.on_sms_refused))
        if self.notifier is not None:
            app.add_subapp(LINK_PREFIX.rstrip("/"), self.notifier.link_app())
        return app

    def status_app(self) -> web.Application:
        """What ops read (connections.status.listen): /status, /status.json, /metrics;
        behind its bearer token when one is configured."""
        token = self._status_token()
        app = make_status_app(self.journal, self.metrics, self.directory.practice.name,
                              self.directory.practice.timezone, self.journal.held,
                              lambda: datetime.now(UTC),
                              health=lambda: self.health | {
                                  "journal_disk": self.journal_disk.health(self.clock())},
                              emergency_calls=lambda: self.journal.emergency_calls(10),
                              token=token, hours=self.hours_now)
        if token is not None:  # the conversation API only behind the bearer token
            app.add_routes(self.conversation_members.routes())
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

    def _sms_signing_secret(self) -> str:
        from backline.app.secrets import SecretMissing, read_secret

        gateway = self.directory.connections.sms_gateway
        if gateway is None:
            return ""
        try:
            return read_secret(gateway.signing_secret, "connections.sms_gateway.signing_secret")
        except SecretMissing as exc:
            log.error("%s: every inbound SMS is refused", exc)
            return ""  # an empty secret verifies nothing: every webhook gets 403

    async def on_sms(self, sms: InboundSms) -> None:
        """A signed inbound SMS: journaled (fsynced), and in an outage its automatic reply
        with it (to be sent, or not sent and why), before the gateway hears 200.

        The outcome is ``received`` until the reply is sent (then ``auto-replied``): the
        record says what happened, not what was meant to."""
        mode = self.mode()
        number = self.book.number(sms.recipient)
        outcome = Outcome.REFUSED if number is None else Outcome.RECEIVED
        new = await self.record_attempt(NewAttempt(
            key=sms.journal_key, at=datetime.now(UTC), kind=AttemptKind.SMS, mode=mode,
            sender=sms.sender, sender_raw=sms.sender_raw, recipient=sms.recipient,
            outcome=outcome, text=sms.body,
            delivery=Delivery.HELD if number is not None else Delivery.NOT_NEEDED))
        log.info("SMS from %s to %s: %s%s", e164.redact(sms.sender), sms.recipient,
                 outcome.value, "" if new else " (a retry of one already recorded)")
        # As first recorded (a webhook posted again finds the first one's mode), and every
        # time: a crash between the two writes is mended by the gateway's retry.
        recorded = await asyncio.to_thread(self.journal.attempt, sms.journal_key)
        if recorded is not None:
            await self.replies.keep(recorded)

    def _reply_plan(self, attempt: Attempt) -> ReplyPlan | None:
        """The automatic reply ``attempt`` is owed (None: none at all)."""
        if attempt.kind is not AttemptKind.SMS or attempt.outcome is Outcome.REFUSED:
            return None
        return auto_reply(self.book.number(attempt.recipient), attempt.mode,
                          self.directory.connections.sms_gateway)

    async def on_sms_refused(self, reason: str, remote: str) -> None:
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            datetime.now(UTC), f"sms-webhook:{remote[:64]}", "sms.refused", reason[:200]))

    async def close(self) -> None:
        self._closing.set()
        if self._pin_alerts:
            await asyncio.gather(*self._pin_alerts, return_exceptions=True)
        # Stopping: the CLI no longer waits on this controller to apply a switch.
        with contextlib.suppress(JournalError):
            await asyncio.to_thread(self.journal.forget_controller, self.holder)
        await self.writer.close()
        await self.emergency.close()
        if self.email_intake is not None:
            await self.email_intake.close()
        if self.inbox is not None:
            await self.inbox.close()
        if self.notifier is not None:
            await self.notifier.close()
        if self.reminders is not None:
            await self.reminders.close()
        await self.replies.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def attach(self, mirror: ModeMirror) -> None:
        """The PBX side of the mode (the Asterisk driver), kept in agreement every tick."""
        self.mirror = mirror

    async def wait_mode(self, mode: Mode, within: float) -> None:
        """Until the controller is in ``mode`` (raise TimeoutError after ``within`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.state.mode is not mode:
            changed = self._changed
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))

    def _adopt(self, state: ModeState) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()
            self._changed = asyncio.Event()
            self.metrics.set_engaged(state.mode is Mode.OUTAGE)
            if state.mode is Mode.NORMAL:
                self.wake_inbox()  # the outage is over: deliver what it held
            self.replies.wake()  # replies go in an outage, and are closed after it
            if state.since is not None:
                self.metrics.mode_changed(state.mode, state.since.via)
            since = state.since
            log.warning("mode is now %s (by %s via %s%s)", state.mode.value,
                        since.by if since else "-", since.via.value if since else "-",
                        f": {since.reason}" if since and since.reason else "")

    async def switch(self, to: Mode, *, by: str, via: Via, reason: str) -> ModeChange:
        """Switch the mode from inside the controller (desk phone, console); record it."""
        state = await asyncio.to_thread(self.journal.mode_state)
        change = switch(state, to, at=datetime.now(UTC), by=by, via=via, reason=reason)
        await asyncio.to_thread(self.journal.record_mode_change, change, state)
        self._adopt(ModeState(change.mode, change))
        await self.sync_once()
        return change

    async def desk_phone_switch(self, desk_phone: str, to: Mode, pin: str) -> bool:
        """An admin's desk phone with the PIN switches the mode; anything else is refused and
        recorded (who tried, from which phone; never the digits)."""
        user = await self._admin_by_pin(desk_phone, pin, f"outage.{to.value}", "outage switch")
        if user is None:
            return False
        with contextlib.suppress(AlreadyInMode):  # the mode the user wanted holds already
            await self.switch(to, by=user, via=Via.DESK_PHONE,
                              reason=f"switched from desk phone {desk_phone}")
        return True

    async def desk_phone_hours(self, desk_phone: str, to: HoursState, pin: str) -> bool:
        """An admin's desk phone with the PIN (``*26``/``*27``) forces the practice closed or
        open until the next scheduled change; journaled and audited like an outage switch."""
        user = await self._admin_by_pin(desk_phone, pin, f"hours.{to.value}", "hours override")
        if user is None:
            return False
        override = HoursOverride(to, self.clock(), user, Via.DESK_PHONE.value)
        await asyncio.to_thread(self.journal.record_hours_override, override)
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            override.at, user, f"hours.{to.value}",
            f"forced {to.value} from desk phone {desk_phone[:40]} until the next scheduled "
            "change"))
        self.hours_override = override
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
        now = self.clock()
        phone = desk_phone[:40]
        judged: PinJudgement | None = None
        if admin:
            # Judged and stored before any await: two tries at once see each other's count.
            judged = judge_pin(self._pins.get(phone, PinRecord()), pin_ok, now, self.pin_policy)
            self._pins[phone] = judged.record
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
        from email.utils import format_datetime, make_msgid

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
                message["Message-ID"] = make_msgid(domain="backline.invalid")
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

    async def sync_once(self) -> None:
        """One round: read the journal's mode, bring the PBX and the journal into agreement,
        and report what this controller runs by.  Never raises: a round that fails (the
        journal locked or full, the PBX not answering, anything) is logged and counted in
        /metrics (``backline_mode_rounds_failed``), and the next round tries again."""
        self._observe_link()
        try:
            await self._agree()
            await self._report()
            # An override set through another controller on the same journal holds here too.
            self.hours_override = await asyncio.to_thread(self.journal.hours_override)
            await self.conversation_members.refresh()
        except JournalError as exc:
            self._round_failed("journal", f"the journal failed: {exc}")
        except PbxError as exc:  # the link down, or a command refused: the next round retries
            self._round_failed("pbx", f"could not bring the PBX's mode up to date: {exc}")
        except Exception as exc:
            log.exception("mode round failed")
            self._round_failed("other", f"{type(exc).__name__}: {exc}")
        finally:
            self._round_ended.set()
            self._round_ended = asyncio.Event()

    def _round_failed(self, part: str, why: str) -> None:
        self.failed_rounds += 1
        self.metrics.mode_round_failed(part)
        log.warning("mode round failed (%s); trying again in %.0f s", why, MODE_POLL_SECONDS)

    async def wait_rounds(self, until: Callable[[], bool], within: float) -> None:
        """Until ``until()`` holds at the end of a mode round (TimeoutError after ``within``
        s).  For tests: they wait on the controller's rounds rather than on the clock."""
        async with asyncio.timeout(within):
            while not until():
                await self._round_ended.wait()

    def _observe_link(self) -> None:
        """The PBX link's state, each round: the gauge and the status page follow it."""
        if self.mirror is None:
            return
        up, now = self.mirror.up, self.clock()
        self.metrics.link(self.pbx_label, up)
        current = self.health["pbx_link"]
        if up:
            self.health["pbx_link"] = current.succeeded(now, "the PBX link is up")
        else:
            self._pbx_switch, self._pbx_at = "", None  # unknown until it is back
            if current.verdict is not Verdict.FAILING:
                self.health["pbx_link"] = current.failed(now, "the link to the PBX is down",
                                                         "the PBX link is down")

    async def _agree(self) -> None:
        self._adopt(await asyncio.to_thread(self.journal.mode_state))
        if self.mirror is None:
            self._pbx_switch, self._pbx_at = switch_key(self.state.since), self.clock()
            return
        if not self.mirror.up:
            return
        pbx_mode, ack, by, reason = await self.mirror.read_mode()
        action = reconcile(pbx_mode, ack, self.state)
        match action:
            case InSync():
                pass
            case PushToPbx():
                await self.mirror.write_mode(action.mode)
                log.info("the PBX now shows mode %s", action.mode.value)
            case Agree():
                await self.mirror.write_mode(action.mode, ack_only=True)
                if by is not None or reason is not None:
                    await self.mirror.forget_console_note()  # that switch's, not the next's
            case RecordConsoleSwitch():
                await self._record_console(action.mode, by, reason)
            case _:
                assert_never(action)
        key = switch_key(self.state.since)
        if self._pbx_switch != key:
            self._pbx_switch, self._pbx_at = key, self.clock()

    async def _record_console(self, mode: Mode, by: str | None, reason: str | None) -> None:
        """Journal a switch made on the PBX console, then agree with the PBX.  A journal
        failure raises: the PBX keeps ``mode != ack``, so the next round records it."""
        assert self.mirror is not None
        state = self.state
        try:
            change = switch(state, mode, at=datetime.now(UTC), by=f"console:{by}" if by
                            else "console", via=Via.CONSOLE,
                            reason=reason or "switched on the Asterisk console")
            await asyncio.to_thread(self.journal.record_mode_change, change, state)
            self._adopt(ModeState(change.mode, change))
        except StaleMode:
            return  # the journal moved meanwhile; the next tick reconciles against it
        except AlreadyInMode:
            pass
        await self.mirror.write_mode(mode, ack_only=True)
        if by is not None or reason is not None:
            # Used: a later plain `database put backline mode ...` must not inherit them.
            await self.mirror.forget_console_note()

    async def _report(self) -> None:
        """Tell the journal what this controller runs by and what its PBX holds, when that
        changed or every REPORT_EVERY: `backline outage engage/end` waits on it."""
        now = self.clock()
        what = (switch_key(self.state.since), self._pbx_switch, self.inbox_blocked)
        if what == self._last_report and self._last_report_at is not None \
                and now - self._last_report_at < REPORT_EVERY:
            return
        node = self.node or (self.pbx_label if self.directory.connections.pbx else "")
        report = ControllerReport(self.holder, node, now, what[0], what[1], self._pbx_at,
                                  what[2])
        await asyncio.to_thread(self.journal.report_controller, report,
                                forget_before=now - FORGET_AFTER)
        self._last_report, self._last_report_at = what, now

    async def keep_mode(self, stop: asyncio.Event) -> None:
        """Every second: switches made elsewhere (CLI, console) are picked up and mirrored.
        A failed round never ends the loop (see ``sync_once``)."""
        while not stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MODE_POLL_SECONDS)


def mode_at(history: list[ModeChange], at: datetime) -> Mode:
    """The mode in force at ``at``, from switches listed newest first.

    CDR times have whole seconds: a switch within the same second counts as before it.
    """
    for change in history:
        if change.at.replace(microsecond=0) <= at:
            return change.mode
    return Mode.NORMAL


class ModeMirror(Protocol):
    """The PBX's copy of the mode (see backline.core.mode_sync)."""

    @property
    def up(self) -> bool: ...

    async def read_mode(self) -> tuple[str | None, str | None, str | None, str | None]: ...

    async def write_mode(self, mode: Mode, *, ack_only: bool = False) -> None: ...

    async def forget_console_note(self) -> None:
        """Remove the console's ``by`` and ``reason`` keys once its switch is recorded."""


def _alerts_health(directory: Directory, notifier: Notifier | None) -> Health:
    if notifier is not None:
        return idle("no alert sent yet")
    why = why_no_alerts(directory)
    return off(f"no alert will be sent: {why}" if why else "no alert will be sent")


def config_path(directory: Directory) -> str:
    """The config file's absolute path, however it was named on the command line."""
    return str(Path(directory.source).resolve())
