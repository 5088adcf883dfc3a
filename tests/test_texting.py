"""Staff text from practice numbers by the rules calls follow (issue 20, part 2): the texting
API on the status listener (behind its bearer token), the controller as `backline run` wires
it over a real SQLite journal, the Twilio-format stand-in both ways (the Messages API and its
signed status callbacks), and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from backline.app import config
from backline.app.controller import Controller
from backline.core.conversations import ConversationBook, ConversationKey
from backline.core.decisions import OutboundCall, PlaceCall
from backline.core.outage import Mode, Via
from backline.core.ownership import OwnershipBook
from backline.core.routing import decide_outbound
from backline.core.texting import OutboundText, SendText, decide_text
from backline.features.texting.sender import BACKOFF, LEASE_SECONDS
from backline.journal import Journal, open_journal
from backline.journal.texts import TextState
from tests.harness.alert_site import FakeClock, free_port
from tests.harness.postgres import JournalBackend
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, Signing, TwilioGateway
from tests.test_journal import together

MAIN = "+13125550100"      # ana's number, registered for business texting
UNREGISTERED = "+13125550102"  # ana's too, carries SMS, not registered
PATIENT, OTHER = "+17205550141", "+17205550199"
TEXT = "Your lisinopril refill is ready for pickup"
TOKEN_ENV = "BACKLINE_TEST_TEXTING_TOKEN"
SMS_ENV = "BACKLINE_TEST_TEXTING_SMS_TOKEN"
ROOT = Path(__file__).resolve().parent.parent

YAML = """\
practice: {{name: Texting Clinic, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@t.example, admin: true}}
  - {{id: sam, name: Sam Reyes, email: sam@t.example}}
  - {{id: jo, name: Jo Park, email: jo@t.example}}
numbers:
  - {{number: "{main}", carries: [voice, sms], owner: "user:ana", members: ["user:jo"],
     texting_registered: true}}
  - {{number: "{unregistered}", carries: [voice, sms], owner: "user:ana"}}
connections:
  sms_gateway: {{url: "{gateway}", account: {account}, token_env: {sms_env},
                signing_secret_env: {sms_env}}}
  pages: {{listen: "127.0.0.1:{port}", base_url: "http://127.0.0.1:{port}"}}
  status: {{listen: "127.0.0.1:{status_port}", token_env: {token_env}}}
  storage: {{url: "sqlite://{journal}"}}
"""


class Clinic:
    """Controllers over one journal, each with its public and status listeners, restartable;
    the Twilio stand-in beside them."""

    def __init__(self, tmp: Path, gateway: TwilioGateway, token: str) -> None:
        self.gateway = gateway
        self.token = token
        self.clock = FakeClock()
        self.port, self.status_port = free_port(), free_port()
        self.config = tmp / "clinic.yaml"
        self.config.write_text(YAML.format(
            main=MAIN, unregistered=UNREGISTERED, gateway=gateway.base_url,
            account=ACCOUNT_SID, sms_env=SMS_ENV, port=self.port, status_port=self.status_port,
            token_env=TOKEN_ENV, journal=tmp / "journal.db"))
        self.controllers: list[Controller] = []
        self._runners: list[web.AppRunner] = []

    @property
    def c(self) -> Controller:
        return self.controllers[0]

    @property
    def journal(self) -> Journal:
        return self.c.journal

    async def start(self, *, listen: bool = True) -> Controller:
        """A controller over the clinic's journal; the first one listens."""
        directory = config.load(self.config).directory
        controller = Controller(directory, open_journal(directory.connections.storage.url),
                                clock=self.clock)
        await controller.start()
        self.controllers.append(controller)
        if listen:
            for app, port in ((controller.web_app(), self.port),
                              (controller.status_app(), self.status_port)):
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                self._runners.append(runner)
        return controller

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        for controller in self.controllers:
            await controller.close()
            controller.journal.close()
        self.controllers.clear()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def api(self, path: str, body: dict[str, str], token: str | None = "",
                  ) -> tuple[int, dict[str, Any]]:
        given = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {given}"} if given is not None else {}
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{self.status_port}{path}", json=body,
                headers=headers) as r:
            text = await r.text()
            return r.status, json.loads(text) if r.content_type == "application/json" else {}

    async def text(self, key: str, user: str, number: str, to: str, text: str = TEXT,
                   ) -> tuple[int, dict[str, Any]]:
        return await self.api("/texts/send", {"key": key, "user": user, "number": number,
                                              "to": to, "text": text})

    async def show(self, key: str) -> dict[str, Any]:
        status, answer = await self.api("/texts/show", {"key": key})
        assert status == 200, answer
        return answer

    async def health(self) -> dict[str, Any]:
        """The status listener's word on staff texting (``/status.json``)."""
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{self.status_port}/status.json",
                headers={"Authorization": f"Bearer {self.token}"}) as r:
            found: dict[str, Any] = (await r.json())["health"]["staff_texts"]
            return found

    async def settle(self) -> None:
        for controller in self.controllers:
            await controller.texts.settle()


@pytest.fixture()
async def clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clinic]:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    monkeypatch.setenv(SMS_ENV, AUTH_TOKEN)
    async with TwilioGateway() as gateway:
        site = Clinic(tmp_path, gateway, token)
        await site.start()
        try:
            yield site
        finally:
            await site.stop()


def sent(gateway: TwilioGateway) -> list[tuple[str, str, str]]:
    return [(m.sender, m.to, m.body) for m in gateway.sent]


async def test_a_member_texts_once_per_key_and_the_signed_status_callback_is_journaled(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await clinic.api("/texts/send", {}, token=None))[0] == 401
    status, answer = await clinic.text("k-1", "ana", "(312) 555-0100", "720-555-0141")
    assert status == 202 and answer["state"] == "pending", answer
    await clinic.settle()
    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)]
    [message] = clinic.gateway.sent
    shown = await clinic.show("k-1")
    assert (shown["state"], shown["tries"], shown["message_sid"], shown["delivery"]) == (
        "sent", 1, message.sid, "")

    # The same request again (the inbox retried it): answered from the journal, not sent.
    status, again = await clinic.text("k-1", "ana", MAIN, PATIENT)
    assert status == 200 and again["duplicate"] is True and again["state"] == "sent"
    # The same key for another text is refused, without echoing either text.
    status, other = await clinic.text("k-1", "ana", MAIN, PATIENT, "another text")
    assert (status, other) == (409, {"refused": "the key was used for another text"})
    await clinic.settle()
    assert len(clinic.gateway.sent) == 1 and clinic.gateway.requests == 1

    # The gateway's status callbacks: forged ones refused and change nothing.
    for signing in (Signing.NONE, Signing.WRONG_TOKEN, Signing.TAMPERED):
        forged = await clinic.gateway.report_status(message, "delivered", signing=signing)
        assert forged.status == 403, signing
    assert (await clinic.show("k-1"))["delivery"] == ""
    refused = [e for e in clinic.journal.audit_log() if e.action == "sms.refused"]
    assert len(refused) >= 1 and all(e.detail.startswith("status callback:") for e in refused)
    for status_word in ("sent", "delivered", "sent"):  # the last one arrives late
        assert (await clinic.gateway.report_status(message, status_word)).status == 200
    [row] = clinic.journal.staff_texts()
    assert (row.state, row.delivery, row.message_sid, row.body) == (
        TextState.SENT, "delivered", message.sid, TEXT)
    assert message.status_callback == \
        f"http://127.0.0.1:{clinic.port}/sms/status?text={row.id}"

    audit = [(e.actor, e.detail) for e in clinic.journal.audit_log() if e.action == "text.send"]
    # Who is texting is the user the inbox names; who asked is the token's holder.
    assert audit == [("ana", f"ana texted from {MAIN} to …41 (via api: the connections.status "
                      "token, from 127.0.0.1)")]
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text


async def test_refusals_say_why_without_the_text_and_send_nothing(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def refused(key: str, user: str, number: str, to: str) -> tuple[str, str]:
        status, answer = await clinic.text(key, user, number, to)
        assert status == 403, answer
        assert "lisinopril" not in json.dumps(answer) and PATIENT not in json.dumps(answer)
        return answer["why"], answer["refused"]

    # Sam is not a member of the main number.
    assert await refused("r-1", "sam", MAIN, PATIENT) == (
        "not-a-member", f"sam is not a member of {MAIN} and was not added to this "
        "conversation")
    # Added to its conversation with the patient (the conversation API), Sam texts the
    # patient from it, and only the patient.
    status, _ = await clinic.api("/conversations/add", {"number": MAIN, "party": PATIENT,
                                                        "user": "sam", "by": "ana"})
    assert status == 200
    assert await refused("r-2", "sam", MAIN, OTHER) == (
        "wrong-party", f"sam was added to other conversations of {MAIN}, not to this "
        "party's")
    assert (await clinic.text("r-3", "sam", MAIN, PATIENT))[0] == 202
    # A number not registered for business texting sends nothing, even for its owner.
    assert (await refused("r-4", "ana", UNREGISTERED, PATIENT))[0] == "unregistered"
    # In an outage, outbound messaging is refused.
    await clinic.c.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="carrier down")
    assert await refused("r-5", "ana", MAIN, PATIENT) == (
        "outage", "an outage is engaged: outbound messaging is refused until it ends")
    await clinic.settle()

    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)]  # Sam's one allowed text
    assert [t.key for t in clinic.journal.staff_texts()] == ["r-3"]
    audit = [(e.actor, e.detail.split(":")[0]) for e in reversed(clinic.journal.audit_log())
             if e.action == "text.refused"]
    assert audit == [("sam", "not-a-member"), ("sam", "wrong-party"), ("ana", "unregistered"),
                     ("ana", "outage")]
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text


async def test_a_transient_503_is_retried_and_the_text_sent_once(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clinic.gateway.fail_next(1, 503)
    assert (await clinic.text("t-1", "ana", MAIN, PATIENT))[0] == 202
    await clinic.settle()
    shown = await clinic.show("t-1")
    assert (shown["state"], shown["tries"], shown["detail"]) == ("failed", 1, "HTTP 503")
    assert clinic.gateway.sent == [] and clinic.gateway.requests == 1
    health = await clinic.health()  # what ops read on the status page
    assert (health["verdict"], health["says"], health["last_error"]) == (
        "failing", "staff texts are not getting through", "HTTP 503")

    await clinic.restart()  # the schedule is in the journal, not in the process
    await clinic.settle()
    assert clinic.gateway.requests == 1  # not due yet
    clinic.clock.advance(BACKOFF.delay(1))
    await clinic.settle()
    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)]
    for _ in range(3):
        clinic.clock.advance(3600)
        await clinic.settle()
    await clinic.restart()
    await clinic.settle()
    assert clinic.gateway.requests == 2 and len(clinic.gateway.sent) == 1
    shown = await clinic.show("t-1")
    assert (shown["state"], shown["tries"], shown["detail"]) == ("sent", 2, "")
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text
    assert (await clinic.health())["verdict"] == "idle"  # restarted: nothing tried since
    assert (await clinic.text("t-2", "ana", MAIN, PATIENT))[0] == 202
    await clinic.settle()
    assert (await clinic.health())["says"] == "staff texts are being sent"


async def test_a_text_the_gateway_may_have_taken_is_never_sent_again(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clinic.gateway.lose_answer_next(1)  # it takes the text, and the answer is lost
    assert (await clinic.text("d-1", "ana", MAIN, PATIENT))[0] == 202
    await clinic.settle()
    shown = await clinic.show("d-1")
    assert shown["state"] == "in-doubt" and "not sent again" in shown["detail"], shown
    for _ in range(3):
        clinic.clock.advance(3600)
        await clinic.settle()
    await clinic.restart()
    await clinic.settle()
    assert clinic.gateway.requests == 1 and len(clinic.gateway.sent) == 1
    # Its status callback names the text (the signed URL), so the journal learns it went.
    [message] = clinic.gateway.sent
    assert (await clinic.gateway.report_status(message, "delivered")).status == 200
    shown = await clinic.show("d-1")
    assert (shown["state"], shown["message_sid"], shown["delivery"]) == (
        "sent", message.sid, "delivered")
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text


async def test_a_controller_killed_while_its_text_is_on_the_way_never_sends_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill -9` of a controller whose request to the gateway has left (the gateway holds it
    unanswered): the next controller on the journal finds it handed over, and leaves it
    in-doubt rather than text the patient twice."""
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    monkeypatch.setenv(SMS_ENV, AUTH_TOKEN)
    async with TwilioGateway() as gateway:
        clinic = Clinic(tmp_path, gateway, token)
        gateway.stall_next(1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.texting_runner", str(clinic.config), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
            assert (await clinic.text("kill-1", "ana", MAIN, PATIENT))[0] == 202
            await gateway.wait_for_requests(1)  # on its way: the gateway holds it
        finally:
            proc.send_signal(signal.SIGKILL)  # no goodbye, no lease given back
            await proc.wait()
        try:
            await clinic.start()
            asked = clinic.journal.text_by_key("kill-1")
            assert asked is not None and asked.state is TextState.SENDING
            clinic.clock.now = asked.at  # the killed one's clock: its lease still holds
            await clinic.settle()
            assert (await clinic.show("kill-1"))["state"] == "sending"
            clinic.clock.advance(LEASE_SECONDS + 30)  # it has lapsed
            await clinic.settle()
            shown = await clinic.show("kill-1")
            assert shown["state"] == "in-doubt" and shown["tries"] == 1, shown
            for _ in range(3):
                clinic.clock.advance(3600)
                await clinic.settle()
            assert gateway.requests == 1
        finally:
            await clinic.stop()


async def test_two_controllers_on_one_journal_send_a_text_once(clinic: Clinic) -> None:
    second = await clinic.start(listen=False)
    for i in range(5):
        assert (await clinic.text(f"two-{i}", "ana", MAIN, PATIENT, f"{TEXT} ({i})"))[0] == 202
        # Both look at once: each text is claimed by one of them.
        await asyncio.gather(clinic.c.texts.settle(), second.texts.settle())
    await clinic.settle()
    assert sorted(m.body for m in clinic.gateway.sent) == [f"{TEXT} ({i})" for i in range(5)]
    assert clinic.gateway.requests == 5


async def test_a_restart_between_claim_and_send_sends_the_text_once(clinic: Clinic) -> None:
    await clinic.stop()
    # What a controller that stopped leaves in the journal: one text claimed and never
    # handed to the gateway, one handed to it (the request may have left).
    journal = open_journal(f"sqlite://{clinic.config.parent / 'journal.db'}")
    try:
        now = clinic.clock()
        lease = now + timedelta(seconds=LEASE_SECONDS)
        journal.add_text("c-1", now, "ana", MAIN, PATIENT, TEXT)
        journal.add_text("c-2", now, "ana", MAIN, OTHER, TEXT)
        claimed = journal.claim_due_texts(now, lease, "stopped-controller")
        assert [t.key for t in claimed] == ["c-1", "c-2"]
        assert journal.text_handed(claimed[1].id, now, "stopped-controller")
    finally:
        journal.close()

    await clinic.start()
    await clinic.settle()
    assert clinic.gateway.requests == 0  # its claim holds: the other may still be sending
    clinic.clock.advance(LEASE_SECONDS)
    await clinic.settle()
    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)]
    for _ in range(3):
        clinic.clock.advance(3600)
        await clinic.settle()
    await clinic.restart()
    await clinic.settle()
    assert clinic.gateway.requests == 1
    assert ((await clinic.show("c-1"))["state"], (await clinic.show("c-2"))["state"]) == (
        "sent", "in-doubt")


def test_texts_are_claimed_and_handed_once_by_two_controllers_on_every_backend(
        journal_backend: JournalBackend) -> None:
    """The journal's side on SQLite and PostgreSQL: two controllers claiming at the same
    instant each get different texts, only a claim's holder may hand a text to the gateway,
    and one key sent to both at once keeps one text."""
    journals = [open_journal(journal_backend.url) for _ in range(2)]
    try:
        now = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
        lease = now + timedelta(seconds=LEASE_SECONDS)
        for i in range(40):
            journals[0].add_text(f"k-{i}", now, "ana", MAIN, f"+1720555{i:04d}", TEXT)
        claimed = together(2, lambda i: journals[i].claim_due_texts(now, lease, f"c{i}"))
        ids = [t.id for batch in claimed for t in batch]
        assert len(ids) == len(set(ids)) == 40  # each once, none lost
        holder = {t.id: f"c{i}" for i, batch in enumerate(claimed) for t in batch}
        first, second = list(holder)[:2]
        other = "c1" if holder[first] == "c0" else "c0"
        assert not journals[0].text_handed(first, now, other)  # not its claim
        assert journals[0].text_handed(first, now, holder[first])
        assert not journals[1].text_handed(first, now, holder[first])  # handed once
        assert not journals[1].text_handed(second, lease, holder[second])  # its claim lapsed
        added = together(2, lambda i: journals[i].add_text("same", now, "ana", MAIN, PATIENT,
                                                           TEXT))
        assert sorted(new for _, new in added) == [False, True]
        assert added[0][0].id == added[1][0].id
    finally:
        for j in journals:
            j.close()


async def test_backline_text_send_takes_the_text_on_stdin_and_the_controller_sends_it_once(
        clinic: Clinic) -> None:
    def backline(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backline.app.cli", "text", *args,
                               "--config", str(clinic.config)], input=stdin, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)

    refused = await asyncio.to_thread(backline, "send", MAIN, PATIENT, "--as", "sam", "--key",
                                      "cli-1", stdin=TEXT)
    assert refused.returncode == 2
    assert f"refused (not-a-member): sam is not a member of {MAIN}" in refused.stderr
    assert "lisinopril" not in refused.stderr + refused.stdout
    for _ in range(2):  # the second run is the same request: sent once
        done = await asyncio.to_thread(backline, "send", MAIN, "(720) 555-0141", "--as", "ana",
                                       "--key", "cli-2", stdin=TEXT + "\n")
        assert done.returncode == 0, done.stderr
        # The CLI journals at the wall clock's time: the controller's (the test's) moves there.
        asked = clinic.journal.text_by_key("cli-2")
        assert asked is not None
        clinic.clock.now = max(clinic.clock.now, asked.at)
        await clinic.settle()
    assert "already sent under that key" in done.stdout
    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)]
    shown = await asyncio.to_thread(backline, "show", "cli-2", "--json")
    assert json.loads(shown.stdout)["state"] == "sent"
    assert PATIENT not in done.stdout + shown.stdout and "lisinopril" not in shown.stdout


RULES_YAML = """\
practice: {name: Rules Clinic, timezone: America/Chicago}
emergency: {callback: "+13125550100", location: main}
locations:
  - {id: main, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607"}
users:
  - {id: ana, name: Dr. Ana Lee, email: ana@t.example, admin: true, desk_phones: [ana-desk]}
  - {id: sam, name: Sam Reyes, email: sam@t.example, desk_phones: [sam-desk]}
  - {id: jo, name: Jo Park, email: jo@t.example, desk_phones: [jo-desk]}
  - {id: old, name: Old Hand, email: old@t.example, active: false, desk_phones: [old-desk]}
teams:
  - {id: nurses, name: Nurses, members: [jo, old]}
numbers:
  - {number: "+13125550100", carries: [voice, sms], owner: "user:ana",
     members: ["team:nurses"], texting_registered: true}
  - {number: "+13125550101", carries: [voice, sms], owner: "team:nurses",
     texting_registered: true}
connections:
  storage: {url: "sqlite:///tmp/unused.db"}
"""


@pytest.mark.parametrize("mode", [Mode.NORMAL, Mode.OUTAGE])
def test_texting_allows_exactly_the_outbound_calls_the_same_person_may_place(
        tmp_path: Path, mode: Mode) -> None:
    """Every user, registered number and party: a text is allowed exactly when that user's
    desk phone may call the party from the number (one rule, in backline.core)."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    book = OwnershipBook(config.load(path).directory)
    conversations = ConversationBook()
    conversations.hold([ConversationKey("+13125550100", PATIENT, "sam"),
                        ConversationKey("+13125550101", OTHER, "ana")])
    allowed = 0
    for user in ("ana", "sam", "jo", "old"):
        for number in ("+13125550100", "+13125550101"):
            for party in (PATIENT, OTHER):
                call = decide_outbound(book, conversations,
                                       OutboundCall(f"{user}-desk", party, number), mode)
                text = decide_text(book, conversations, OutboundText(user, number, party),
                                   mode)
                assert isinstance(call, PlaceCall) == isinstance(text, SendText), (
                    user, number, party, call, text)
                allowed += isinstance(text, SendText)
    assert allowed == (0 if mode is Mode.OUTAGE else 8)  # ana 3, sam 1, jo 4, old 0


def test_a_texts_life_in_the_journal_on_every_backend(journal_backend: JournalBackend) -> None:
    """Each step the sender and the status callbacks take, on SQLite and PostgreSQL."""
    journal = open_journal(journal_backend.url)
    try:
        now = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
        later = now + timedelta(seconds=2)
        sid = "SM" + "ab" * 16
        text, new = journal.add_text("life", now, "ana", MAIN, PATIENT, TEXT)
        assert new and text.state is TextState.PENDING and journal.next_text_at() == now
        [claimed] = journal.claim_due_texts(now, now + timedelta(seconds=60), "me")
        assert journal.text_handed(claimed.id, now, "me")
        journal.text_failed(claimed.id, later, "HTTP 503")
        failed = journal.text_by_key("life")
        assert failed is not None and (failed.state, failed.tries, failed.detail) == (
            TextState.FAILED, 1, "HTTP 503")
        assert journal.next_text_at() == later and journal.claim_due_texts(
            now, later, "me") == []
        [claimed] = journal.claim_due_texts(later, later + timedelta(seconds=60), "me")
        assert journal.text_handed(claimed.id, later, "me")
        journal.text_sent(claimed.id, later, sid)
        for status in ("delivered", "sent"):  # the late "sent" does not move it back
            shown = journal.text_status(None, sid, status, "", later)
            assert shown is not None and shown.delivery == "delivered"
        assert journal.text_status(claimed.id, "SM" + "cd" * 16, "failed", "30003",
                                   later) is None  # another message's sid
        sent_text = journal.text_by_key("life")
        assert sent_text is not None and (sent_text.state, sent_text.tries,
                                          sent_text.message_sid) == (TextState.SENT, 2, sid)
        journal.add_text("open", later, "ana", MAIN, OTHER, TEXT)
        assert journal.close_open_texts(later, "an outage was engaged") == 1
        closed = journal.text_by_key("open")
        assert closed is not None and closed.state is TextState.NOT_SENT
        assert journal.next_text_at() is None
    finally:
        journal.close()
