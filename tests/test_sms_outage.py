"""Inbound SMS through the controller's webhook, with a Twilio-format gateway on loopback:
in an outage the sender gets the automatic reply at once (the webhook wakes the sender: no
timer stands between); forgeries get 403 and are recorded; message text never reaches the
logs."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backline.app import config
from backline.app.controller import Controller
from backline.core.outage import Mode, Via
from backline.features.sending import retry
from backline.features.sms import auto_replies
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal
from tests.harness.alert_site import FakeClock, free_port
from tests.harness.inbox_server import InboxServer
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, Signing, TwilioGateway

ROOT = Path(__file__).resolve().parent.parent

PRACTICE = "+13125550101"
PATIENT = "+17205550141"
REPLY = "Maple Street: our messaging is down; we may not see your message. Emergencies: 911."

YAML = """\
practice: {{name: SMS Clinic, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@t.example, admin: true}}
numbers:
  - {{number: "{practice}", carries: [voice, sms], owner: "user:ana", texting_registered: true}}
backup:
  sms_reply: "{reply}"
connections:
  sms_gateway: {{url: "{gateway}", from: "{practice}", account: {account},
                token_env: BACKLINE_TEST_SMS_TOKEN, signing_secret_env: BACKLINE_TEST_SMS_TOKEN}}
  pages: {{listen: "127.0.0.1:{port}", base_url: "http://127.0.0.1:{port}"}}
  storage: {{url: "sqlite://{journal}"}}
"""


class Site:
    def __init__(self, controller: Controller, gateway: TwilioGateway, url: str) -> None:
        self.controller = controller
        self.gateway = gateway
        self.webhook = url


@pytest.fixture()
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    monkeypatch.setenv("BACKLINE_TEST_SMS_TOKEN", AUTH_TOKEN)
    # The reply sender's nap between rounds (30 s) made an hour: no reply here can ride on a
    # round that came round by itself; each must be sent because the webhook woke the sender.
    monkeypatch.setattr(auto_replies, "MAX_NAP", 3600.0)
    async with TwilioGateway() as gateway:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        path = tmp_path / "sms.yaml"
        path.write_text(YAML.format(practice=PRACTICE, reply=REPLY, gateway=gateway.base_url,
                                    account=ACCOUNT_SID, port=port,
                                    journal=tmp_path / "journal.db"))
        directory = config.load(path).directory
        journal = open_journal(directory.connections.storage.url)
        controller = Controller(directory, journal)
        await controller.start()  # as `backline run` does: the reply sender among the rest
        runner = web.AppRunner(controller.web_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Site(controller, gateway, f"http://127.0.0.1:{port}/sms/inbound")
        finally:
            await runner.cleanup()
            await controller.close()
            journal.close()


async def test_outage_sms_gets_the_automatic_reply_within_two_seconds(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await site.controller.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="carrier down")
    answer = await site.gateway.deliver(site.webhook, PATIENT, PRACTICE, "refill my lisinopril")
    assert answer.status == 200
    # "Within seconds" is not timed on this test's clock, which a loaded machine stretches:
    # the sender naps an hour here (the fixture), so only the webhook's wake can have sent
    # the reply before this deadline, which only bounds a hang.  The journal's own times
    # then say the reply was due on receipt and went on its first try, after it.
    sent = await site.gateway.wait_for_sent(1, within=30)
    assert [(m.sender, m.to, m.body) for m in sent] == [(PRACTICE, PATIENT, REPLY)]
    await site.controller.replies.settle(within=30)  # the gateway's 201 is journaled, too
    [attempt] = site.controller.journal.attempts()
    reply = site.controller.journal.replies_of_attempts([attempt.id])[attempt.id]
    assert reply.tries == 1 and reply.sent_at is not None
    assert attempt.at <= reply.next_try_at <= reply.sent_at
    assert (attempt.kind, attempt.outcome, attempt.mode, attempt.delivery) == (
        AttemptKind.SMS, Outcome.AUTO_REPLIED, Mode.OUTAGE, Delivery.HELD)
    assert attempt.text == "refill my lisinopril" and attempt.sender == PATIENT
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text


async def test_a_gateway_retry_of_the_same_message_is_recorded_and_answered_once(
        site: Site) -> None:
    await site.controller.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="drill")
    for _ in range(2):
        answer = await site.gateway.deliver(site.webhook, PATIENT, PRACTICE, "hello",
                                            message_sid="SM" + "ab" * 16)
        assert answer.status == 200
    await site.gateway.wait_for_sent(1, within=30)
    await site.controller.close()  # every reply task has finished
    assert len(site.gateway.sent) == 1
    assert len(site.controller.journal.attempts()) == 1


@pytest.mark.parametrize("signing", [Signing.NONE, Signing.WRONG_TOKEN, Signing.TAMPERED])
async def test_unsigned_or_forged_sms_is_refused_and_recorded(site: Site,
                                                              signing: Signing) -> None:
    await site.controller.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="drill")
    answer = await site.gateway.deliver(site.webhook, PATIENT, PRACTICE, "forged",
                                        signing=signing)
    assert answer.status == 403
    assert site.controller.journal.attempts() == []
    refused = [e for e in site.controller.journal.audit_log() if e.action == "sms.refused"]
    assert len(refused) == 1 and "forged" not in refused[0].detail
    assert site.gateway.sent == []


async def test_normal_mode_sms_is_received_without_a_reply(site: Site) -> None:
    answer = await site.gateway.deliver(site.webhook, PATIENT, PRACTICE, "see you at 3")
    assert answer.status == 200
    await site.controller.close()
    [attempt] = site.controller.journal.attempts()
    assert attempt.outcome is Outcome.RECEIVED and attempt.mode is Mode.NORMAL
    assert site.gateway.sent == []


# -- the reply's real state: retried, not sent and why, in `attempts` and the inbox ------------
#
# A practice as a new user configures it: the gateway's url is the full Messages URL pasted
# from the provider's console (no `account:`), one number registered for texting, one carrying
# SMS but not registered, one voice only; the inbox is a real server; the clock is moved by
# hand, so the retry schedule (5 s, 10 s, ...) is followed without waiting it out.

UNREGISTERED = "+13125550102"
VOICE_ONLY = "+13125550103"
INBOX_TOKEN = "inbox-token-for-the-sms-tests"

CLINIC_YAML = """\
practice: {{name: SMS Clinic, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@t.example, admin: true}}
numbers:
  - {{number: "{practice}", carries: [voice, sms], owner: "user:ana", texting_registered: true}}
  - {{number: "{unregistered}", carries: [voice, sms], owner: "user:ana"}}
  - {{number: "{voice_only}", carries: [voice], owner: "user:ana"}}
backup:
  sms_reply: "{reply}"
connections:
  sms_gateway: {{url: "{gateway}/2010-04-01/Accounts/{account}/Messages.json",
                token_env: BACKLINE_TEST_SMS_TOKEN, signing_secret_env: BACKLINE_TEST_SMS_TOKEN}}
  inbox: {{url: "{inbox}", token_env: BACKLINE_TEST_INBOX_TOKEN}}
  pages: {{listen: "127.0.0.1:{port}", base_url: "http://127.0.0.1:{port}"}}
  storage: {{url: "sqlite://{journal}"}}
"""


class Clinic:
    """The controller as `backline run` wires it (its HTTP app on a loopback port), over one
    journal, restartable; the Twilio stand-in and an inbox server beside it."""

    def __init__(self, tmp: Path, gateway: TwilioGateway, inbox: InboxServer) -> None:
        self.tmp = tmp
        self.gateway = gateway
        self.inbox = inbox
        self.clock = FakeClock()
        self.port = free_port()
        self.config = tmp / "clinic.yaml"
        self.config.write_text(CLINIC_YAML.format(
            practice=PRACTICE, unregistered=UNREGISTERED, voice_only=VOICE_ONLY, reply=REPLY,
            gateway=gateway.base_url, account=ACCOUNT_SID, inbox=inbox.url, port=self.port,
            journal=tmp / "journal.db"))
        self.webhook = f"http://127.0.0.1:{self.port}/sms/inbound"
        self.controller: Controller | None = None
        self._runner: web.AppRunner | None = None

    @property
    def c(self) -> Controller:
        assert self.controller is not None
        return self.controller

    async def start(self) -> None:
        directory = config.load(self.config).directory
        self.controller = Controller(directory, open_journal(directory.connections.storage.url),
                                     clock=self.clock)
        await self.controller.start()
        self._runner = web.AppRunner(self.controller.web_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.controller is not None:
            await self.controller.close()
            self.controller.journal.close()
            self.controller = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def sms(self, to: str, text: str) -> None:
        answer = await self.gateway.deliver(self.webhook, PATIENT, to, text)
        assert answer.status == 200

    async def end_outage(self) -> list[dict[str, Any]]:
        """End the outage and wait until the inbox has everything; return what it filed."""
        await self.c.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
        assert self.c.inbox is not None
        await self.c.inbox.drained(within=30)
        return self.inbox.items()

    async def attempts(self, *args: str) -> str:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "backline.app.cli", "attempts", *args,
                             "--config", str(self.config)],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def attempts_json(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(await self.attempts("--json"))
        return rows


@pytest.fixture()
async def clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clinic]:
    monkeypatch.setenv("BACKLINE_TEST_SMS_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("BACKLINE_TEST_INBOX_TOKEN", INBOX_TOKEN)
    inbox = InboxServer(tmp_path / "inbox.db", token=INBOX_TOKEN)
    await inbox.start()
    try:
        async with TwilioGateway() as gateway:
            site = Clinic(tmp_path, gateway, inbox)
            await site.start()
            try:
                await site.c.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="carrier down")
                yield site
            finally:
                await site.stop()
    finally:
        await inbox.stop()


async def test_a_failed_reply_is_retried_and_sent_once_across_a_restart(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clinic.gateway.fail_next(2, 503)
    await clinic.sms(PRACTICE, "refill my lisinopril")
    await clinic.c.replies.settle()  # the first try: 503
    [row] = await clinic.attempts_json()
    assert row["outcome"] == "received"  # not "auto-replied": nothing has been sent
    assert row["reply"]["state"] == "failed" and row["reply"]["tries"] == 1
    assert "HTTP 503" in row["reply"]["detail"] and row["reply"]["next_try_at"]
    table = await clinic.attempts()
    assert "reply failed (" in table and "HTTP 503" in table

    await clinic.restart()  # the schedule is in the journal, not in the process
    await clinic.c.replies.settle()
    assert clinic.gateway.requests == 1  # not due yet: 5 s after the first failure
    clinic.clock.advance(retry.retry_delay(1))
    await clinic.c.replies.settle()  # the second try: 503 again
    assert clinic.gateway.sent == [] and clinic.gateway.requests == 2
    clinic.clock.advance(retry.retry_delay(2))
    await clinic.c.replies.settle()  # the third: the gateway is back
    assert [(m.sender, m.to, m.body) for m in clinic.gateway.sent] == [(PRACTICE, PATIENT, REPLY)]

    # Never twice, however long and however often the sender looks, restarts included.
    for _ in range(3):
        clinic.clock.advance(3600)
        await clinic.c.replies.settle()
    await clinic.restart()
    await clinic.c.replies.settle()
    assert len(clinic.gateway.sent) == 1 and clinic.gateway.requests == 3
    [row] = await clinic.attempts_json()
    assert row["outcome"] == "auto-replied"
    assert (row["reply"]["state"], row["reply"]["tries"], row["reply"]["detail"]) == (
        "sent", 3, "")
    assert "reply sent" in await clinic.attempts()

    [item] = await clinic.end_outage()
    assert item["outcome"] == "auto-replied" and item["text"] == "refill my lisinopril"
    assert item["reply"]["state"] == "sent" and item["reply"]["tries"] == 3
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text


@pytest.mark.parametrize(("number", "why"), [
    (UNREGISTERED, "the number is not registered for business texting"),
    (VOICE_ONLY, "the number does not carry SMS"),
])
async def test_no_reply_from_a_number_that_cannot_text_is_recorded_as_not_sent_and_why(
        clinic: Clinic, number: str, why: str) -> None:
    await clinic.sms(number, "are you open?")
    await clinic.c.replies.settle()
    assert clinic.gateway.requests == 0  # nothing tried: carriers would block it
    [row] = await clinic.attempts_json()
    assert (row["to"], row["outcome"]) == (number, "received")
    assert (row["reply"]["state"], row["reply"]["detail"], row["reply"]["tries"]) == (
        "not-sent", why, 0)
    assert f"reply not sent ({why})" in await clinic.attempts()
    [item] = await clinic.end_outage()
    assert item["outcome"] == "received" and item["reply"]["state"] == "not-sent"
    assert item["reply"]["detail"] == why


async def test_a_reply_still_failing_when_the_outage_ends_is_not_sent_and_the_inbox_says_so(
        clinic: Clinic) -> None:
    clinic.gateway.fail_next(100, 503)
    await clinic.sms(PRACTICE, "hello")
    await clinic.c.replies.settle()
    clinic.clock.advance(retry.retry_delay(1))
    await clinic.c.replies.settle()
    [item] = await clinic.end_outage()
    assert item["outcome"] == "received"
    assert item["reply"]["state"] == "not-sent" and item["reply"]["tries"] == 2
    assert item["reply"]["detail"].startswith("the outage ended before it could be sent (last "
                                              "try: ")
    # Its text ("we may not see your message until...") is no longer true: never sent now.
    requests = clinic.gateway.requests
    clinic.clock.advance(3600)
    await clinic.c.replies.settle()
    assert clinic.gateway.requests == requests == 2
    [row] = await clinic.attempts_json()
    assert row["reply"]["state"] == "not-sent" and row["delivery"] == "delivered"


async def test_an_sms_journaled_just_before_a_crash_still_gets_its_reply(clinic: Clinic) -> None:
    # What a controller stopped between writing the attempt and its reply leaves behind.
    await clinic.c.record_attempt(NewAttempt(
        key="sms:SM" + "cd" * 16, at=datetime.now(UTC), kind=AttemptKind.SMS,
        mode=Mode.OUTAGE, sender=PATIENT, recipient=PRACTICE, outcome=Outcome.RECEIVED,
        text="hi", delivery=Delivery.HELD))
    await clinic.restart()
    await clinic.gateway.wait_for_sent(1)
    await clinic.c.replies.settle()
    [row] = await clinic.attempts_json()
    assert row["reply"]["state"] == "sent" and row["outcome"] == "auto-replied"
