"""A practice with backup alerts, wired the way ``backline run`` wires it, for the alert and
link-page tests and the benchmark: a real SMTP server (:mod:`tests.harness.smtp_sink`), the
Twilio stand-in, a SQLite journal, the controller's HTTP app on a loopback port, and a clock
the test moves by hand.

Attempts are recorded through ``Controller.record_attempt``, the same door the FastAGI
driver, the SMS webhook and the CDR import use.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import pytest
from aiohttp import web

from backline.app import config
from backline.app.controller import Controller
from backline.core.outage import Mode, Via
from backline.features.alerts.feature import Alerts
from backline.features.alerts.gather import GatherPolicy
from backline.features.alerts.service import Notifier, notifier_for
from backline.features.notices.feature import Notices
from backline.journal import AttemptKind, Delivery, Journal, NewAttempt, Outcome, open_journal
from tests.harness.ports import listen_port
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, TwilioGateway
from tests.harness.smtp_sink import SmtpSink

PRACTICE_NAME = "Maple Street Family Medicine"
PRACTICE_NUMBER = "+13125550100"
FAX_NUMBER = "+13125550107"
ALERT_EMAILS = ("ops@maple.example", "ana.alerts@maple.example")
ALERT_SMS = ("+13125550199",)
TOKEN_ENV = "BACKLINE_TEST_ALERT_SMS_TOKEN"

YAML = """\
practice: {{name: {name}, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@maple.example, admin: true}}
numbers:
  - {{number: "{practice}", carries: [voice, sms], owner: "user:ana", texting_registered: true}}
  - {{number: "{fax}", carries: [fax]}}
backup:
  alerts: {{kind: {kind}, emails: [{emails}], sms: [{sms}]}}
  link_hours: 12
connections:
  smtp: {{host: 127.0.0.1, port: {smtp_port}, {smtp}from: backline@maple.example}}
  sms_gateway: {{url: "{gateway}", from: "{practice}", account: {account},
                token_env: {token_env}, signing_secret_env: {token_env}}}
  pages: {{listen: "127.0.0.1:{port}", base_url: "http://127.0.0.1:{port}"}}
  status: {{listen: "127.0.0.1:{status_port}"}}
  storage: {{url: "sqlite://{journal}"}}
{inbox}"""
INBOX_TOKEN_ENV = "BACKLINE_TEST_ALERT_INBOX_TOKEN"


class FakeClock:
    """The controller's clock, moved only by the test."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 3, 3, 14, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def free_port() -> int:
    """A port for a listener this test starts, and may start again after a restart (one of
    the worker's own, below the ephemeral range: tests/harness/ports.py)."""
    return listen_port()


@dataclass
class Site:
    tmp: Path
    sink: SmtpSink
    gateway: TwilioGateway
    clock: FakeClock
    kind: str = "email+sms"
    sms: tuple[str, ...] = ALERT_SMS  # the numbers alerts and reminders are texted to
    port: int = 0
    controller: Controller | None = None
    journal: Journal | None = None
    runner: web.AppRunner | None = None
    status_port: int = 0  # the status listener (/status, /status.json, /metrics)
    status_runner: web.AppRunner | None = None
    access_log: bool = False
    policy: GatherPolicy | None = None
    inbox_url: str = ""  # the practice's inbox (token from INBOX_TOKEN_ENV), if any
    smtp: str = "starttls: false, "  # connections.smtp's TLS keys, each followed by ", "
    # The outage's start and end notices: off unless a test is about them, so that the
    # other tests' counts of what the SMTP server and the gateway took are of their own.
    notices: bool = False
    _keys: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def notifier(self) -> Notifier:
        assert self.controller is not None and self.controller.notifier is not None
        return self.controller.notifier

    async def start_controller(self) -> Controller:
        """A controller (and HTTP app) over the site's journal, as after a restart.

        The gateway's token is in TOKEN_ENV while the AlertSite runs (AlertSite sets it)."""
        self.port = self.port or free_port()
        self.status_port = self.status_port or free_port()
        path = self.tmp / "practice.yaml"
        path.write_text(YAML.format(
            name=PRACTICE_NAME, practice=PRACTICE_NUMBER, fax=FAX_NUMBER, kind=self.kind,
            emails=", ".join(ALERT_EMAILS), sms=", ".join(f'"{n}"' for n in self.sms),
            smtp_port=self.sink.port, smtp=self.smtp, gateway=self.gateway.base_url,
            account=ACCOUNT_SID, token_env=TOKEN_ENV, port=self.port,
            status_port=self.status_port,
            journal=self.tmp / "journal.db",
            inbox=f'  inbox: {{url: "{self.inbox_url}", token_env: {INBOX_TOKEN_ENV}}}\n'
            if self.inbox_url else ""))
        directory = config.load(path).directory
        self.journal = open_journal(directory.connections.storage.url)
        self.controller = Controller(directory, self.journal, clock=self.clock)
        if self.policy is not None:  # not yet started: nothing to close on the one replaced
            alerts = self.controller.feature(Alerts)
            notifier = notifier_for(directory, self.journal, self.clock, policy=self.policy)
            assert alerts is not None and notifier is not None
            alerts.service = notifier
        if not self.notices:  # not yet started: nothing to close on the one left out
            self.controller.features = [f for f in self.controller.features
                                        if not isinstance(f, Notices)]
        await self.controller.start()
        # The access log on (tests that check it redacts tokens) or off (as `backline run`).
        app = self.controller.web_app()
        self.runner = (web.AppRunner(app) if self.access_log
                       else web.AppRunner(app, access_log=None))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.status_runner = web.AppRunner(self.controller.status_app(), access_log=None)
        await self.status_runner.setup()
        await web.TCPSite(self.status_runner, "127.0.0.1", self.status_port).start()
        return self.controller

    async def stop_controller(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.status_runner is not None:
            await self.status_runner.cleanup()
            self.status_runner = None
        if self.controller is not None:
            await self.controller.close()
            self.controller = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    async def restart_controller(self) -> Controller:
        await self.stop_controller()
        return await self.start_controller()

    async def engage(self) -> None:
        assert self.controller is not None
        await self.controller.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="carrier down")

    async def record(self, kind: AttemptKind, sender: str, recipient: str, *, text: str = "",
                     file: str = "", detail: str = "", outcome: Outcome | None = None,
                     mode: Mode = Mode.OUTAGE) -> bool:
        assert self.controller is not None
        self._keys += 1
        default = {AttemptKind.CALL: Outcome.ANNOUNCED, AttemptKind.SMS: Outcome.AUTO_REPLIED,
                   AttemptKind.FAX: Outcome.RECEIVED}[kind]
        return await self.controller.record_attempt(NewAttempt(
            key=f"test:{kind.value}:{self._keys}:{self.clock().timestamp()}", at=self.clock(),
            kind=kind, mode=mode, sender=sender, recipient=recipient,
            outcome=outcome or default, text=text, file=file, detail=detail,
            delivery=Delivery.HELD if mode is Mode.OUTAGE else Delivery.NOT_NEEDED))

    async def close(self) -> None:
        await self.stop_controller()


class AlertSite:
    """``async with AlertSite(tmp) as site:`` starts the peers and a controller."""

    def __init__(self, tmp: Path, *, kind: str = "email+sms", access_log: bool = False,
                 policy: GatherPolicy | None = None, inbox_url: str = "",
                 smtp: str = "starttls: false, ", sink_tls: ssl.SSLContext | None = None,
                 sms: tuple[str, ...] = ALERT_SMS, notices: bool = False) -> None:
        self._tmp = tmp
        self._notices = notices
        self._sms = sms
        self._smtp = smtp
        self._inbox_url = inbox_url
        self._kind = kind
        self._access_log = access_log
        self._policy = policy
        self._sink = SmtpSink(sink_tls)
        self._gateway = TwilioGateway()
        self._site: Site | None = None
        # Undone when the site stops: the next test in this worker must not inherit the
        # token (tests/test_hygiene.py).
        self._env = pytest.MonkeyPatch()

    async def __aenter__(self) -> Site:
        self._env.setenv(TOKEN_ENV, AUTH_TOKEN)
        started = False
        try:
            await self._sink.start()
            await self._gateway.start()
            self._site = Site(self._tmp, self._sink, self._gateway, FakeClock(),
                              kind=self._kind, access_log=self._access_log,
                              policy=self._policy, inbox_url=self._inbox_url, smtp=self._smtp,
                              sms=self._sms, notices=self._notices)
            await self._site.start_controller()
            started = True
        finally:
            if not started:  # __aexit__ is not called when __aenter__ raises
                self._env.undo()
        return self._site

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._site is not None:
                await self._site.close()
            await self._gateway.stop()
            await self._sink.stop()
        finally:
            self._env.undo()
