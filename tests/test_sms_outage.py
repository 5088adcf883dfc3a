"""Inbound SMS through the controller's webhook, with a Twilio-format gateway on loopback:
in an outage the sender gets the automatic reply within 2 s; forgeries get 403 and are
recorded; message text never reaches the logs."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from telephony import config
from telephony.controller import Controller
from telephony.journal import AttemptKind, Delivery, Outcome, open_journal
from telephony.outage import Mode, Via
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, Signing, TwilioGateway

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
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    os.environ["BACKLINE_TEST_SMS_TOKEN"] = AUTH_TOKEN
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
    sent = await site.gateway.wait_for_sent(1, within=2.0)
    assert [(m.sender, m.to, m.body) for m in sent] == [(PRACTICE, PATIENT, REPLY)]
    await site.controller.replies.settle()  # the gateway's 201 is journaled, too
    [attempt] = site.controller.journal.attempts()
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
    await site.gateway.wait_for_sent(1, within=2.0)
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
