"""After the outage: held attempts and emails reach the practice's inbox in order, exactly once.

The inbox is a real HTTP server (``tests/harness/inbox_server.py``) that fails 30% of requests
at random, before and after filing, and restarts; the controller is the real one, in this
process or (for SIGKILL) as a subprocess on the same journal; email comes in over SMTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from backline.app import config
from backline.app.controller import Controller
from backline.core.outage import Mode, Via, switch
from backline.features.inbox.payload import Accepted, Refused, TryAgain, answer_for
from backline.features.sending.retry import Backoff
from backline.journal import AttemptKind, Delivery, Journal, NewAttempt, Outcome, open_journal
from backline.journal.delivery import ItemState
from backline.journal.rows import from_text
from tests.harness.alert_site import free_port
from tests.harness.inbox_server import InboxServer
from tests.harness.postgres import JournalBackend

FAST = Backoff(first=0.01, cap=0.2)
TOKEN = "inbox-token-for-the-tests"
MAIN, ANA_LINE, DESK_LINE = "+13125550100", "+13125550101", "+13125550102"
ROOT = Path(__file__).resolve().parent.parent


def practice_yaml(tmp: Path, inbox_url: str, smtp_port: int) -> Path:
    path = tmp / "practice.yaml"
    path.write_text(f"""\
practice: {{name: Maple Street Family Medicine, timezone: UTC}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@maple.example, admin: true, extension: "101",
     desk_phones: [ana-desk]}}
  - {{id: sam, name: Sam Ortiz, email: sam@maple.example, extension: "111",
     desk_phones: [sam-desk]}}
  - {{id: jo, name: Jo Kim, email: jo@maple.example, extension: "112", desk_phones: [jo-desk]}}
teams:
  - {{id: front-desk, name: Front Desk, members: [sam, jo]}}
emergency: {{callback: "{MAIN}", location: main, notify: {{desk_phones: [ana-desk]}}}}
locations:
  - {{id: main, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607"}}
numbers:
  - {{number: "{MAIN}", carries: [voice, sms, fax], owner: practice,
     conversation_tags: [main-line], contact_tags: [new-patient], texting_registered: true}}
  - {{number: "{ANA_LINE}", carries: [voice, sms], owner: "user:ana", auto_assign: true,
     conversation_tags: [dr-lee], contact_tags: [lee-patient], texting_registered: true}}
  - {{number: "{DESK_LINE}", carries: [voice, sms], owner: "team:front-desk",
     auto_assign: true, conversation_tags: [scheduling], texting_registered: true}}
connections:
  inbox: {{url: "{inbox_url}", token_env: BACKLINE_INBOX_TOKEN}}
  email_intake: {{listen: "127.0.0.1:{smtp_port}", domains: [maple.example]}}
  storage: {{url: "sqlite://{tmp}/journal.db"}}
""")
    return path


@dataclass
class Practice:
    tmp: Path
    config: Path
    inbox: InboxServer
    smtp_port: int

    def journal(self) -> Journal:
        return open_journal(f"sqlite://{self.tmp}/journal.db")

    def directory(self) -> Any:
        return config.load(self.config).directory


@pytest.fixture
async def practice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Practice]:
    monkeypatch.setenv("BACKLINE_INBOX_TOKEN", TOKEN)
    inbox = InboxServer(tmp_path / "inbox.db", fail_rate=0.3, token=TOKEN,
                        refuse=lambda doc: "REFUSE-ME" in str(doc.get("text", "")))
    await inbox.start()
    port = free_port()
    p = Practice(tmp_path, practice_yaml(tmp_path, inbox.url, port), inbox, port)
    try:
        yield p
    finally:
        await inbox.stop()


# How long `outage end` may wait for the running controller to confirm (the CLI's default is
# 5 s, which a loaded machine can miss): it returns as soon as it is confirmed.
WAIT = ("--wait", "30")


def engage(journal: Journal, to: Mode) -> None:
    state = journal.mode_state()
    journal.record_mode_change(switch(state, to, at=datetime.now(UTC), by="ops", via=Via.CLI,
                                      reason="the PBX host is down" if to is Mode.OUTAGE
                                      else ""), state)


def seed(journal: Journal, tmp: Path, count: int, *, refuse_every: int = 0) -> list[str]:
    """``count`` held items of every kind (calls, SMS, faxes with a PDF, emails), in the
    order received; return their keys in that order."""
    base = datetime.now(UTC) - timedelta(hours=1)
    keys: list[str] = []
    (tmp / "fax").mkdir(exist_ok=True)
    for i in range(count):
        at = base + timedelta(milliseconds=i)
        if i % 10 == 9:
            key = f"email:{i}"
            journal.hold_email(key, at, f"patient{i}@mail.example", ["frontdesk@maple.example"],
                               f"Subject: visit {i}\r\n\r\nhello {i}\r\n".encode())
            keys.append(key)
            continue
        kind = (AttemptKind.CALL, AttemptKind.SMS, AttemptKind.FAX)[i % 3]
        to = MAIN if kind is AttemptKind.FAX else (MAIN, ANA_LINE, DESK_LINE)[(i // 3) % 3]
        file = ""
        if kind is AttemptKind.FAX:
            pdf = tmp / "fax" / f"fax-{i}.pdf"
            pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(64) + f"\n% fax {i}\n".encode())
            file = str(pdf)
        text = f"message {i}" if kind is AttemptKind.SMS else ""
        if refuse_every and i % refuse_every == refuse_every - 1 and kind is AttemptKind.SMS:
            text = f"REFUSE-ME {i}"
        a = NewAttempt(key=f"{kind.value}:{i}", at=at, kind=kind, mode=Mode.OUTAGE,
                       sender=f"+1555010{i:04d}", recipient=to,
                       outcome=Outcome.RECEIVED if kind is not AttemptKind.CALL
                       else Outcome.ANNOUNCED, text=text, file=file, delivery=Delivery.HELD)
        journal.record_attempt(a)
        keys.append(f"attempt:{a.key}")
    return keys


async def backline(p: Practice, *args: str) -> tuple[int, str]:
    """The CLI as ops run it (stdout a pipe, not a terminal): exit status and stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backline.app.cli", *args, "--config", str(p.config), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    return await proc.wait(), out.decode()


async def running(p: Practice) -> Controller:
    journal = await asyncio.to_thread(p.journal)
    controller = Controller(p.directory(), journal)
    assert controller.inbox is not None
    controller.inbox.backoff = FAST
    await controller.start()
    return controller


async def stop(controller: Controller) -> None:
    await controller.close()
    controller.journal.close()


def assert_exactly_once_in_order(p: Practice, keys: list[str]) -> None:
    filed = p.inbox.items()
    assert [doc["key"] for doc in filed] == keys  # each once, in the order received
    journal = p.journal()
    try:
        assert journal.held() == {}
        assert journal.inbox_counts().get("held", 0) == 0
        assert all(a.delivery is Delivery.DELIVERED for a in journal.attempts(limit=100_000))
    finally:
        journal.close()


# -- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    (200, Accepted), (201, Accepted), (204, Accepted),
    # About this item: refused, reported, and the drain goes on.
    (400, Refused), (413, Refused), (415, Refused), (422, Refused), (410, Refused),
    # About the endpoint (token, URL, proxy) or "later": every item would get it alike.
    (401, TryAgain), (403, TryAgain), (404, TryAgain), (405, TryAgain), (407, TryAgain),
    (408, TryAgain), (409, TryAgain), (425, TryAgain), (429, TryAgain),
    (500, TryAgain), (502, TryAgain), (503, TryAgain), (302, TryAgain)])
def test_what_an_inbox_answer_means(status: int, expected: type) -> None:
    assert isinstance(answer_for(status, "x"), expected)


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first=1.0, cap=300.0)
    assert [b.delay(n) for n in (1, 2, 3, 9, 10, 50)] == [1, 2, 4, 256, 300, 300]


def test_email_intake_config_problems_name_file_line_and_field(tmp_path: Path) -> None:
    path = practice_yaml(tmp_path, "http://127.0.0.1:9/inbox", 2526)
    text = path.read_text().replace("domains: [maple.example]", "domains: [not a domain]")
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    [problem] = info.value.problems
    assert problem.field == "connections.email_intake.domains[0]"
    assert problem.line == text.splitlines().index(
        next(line for line in text.splitlines() if "email_intake" in line)) + 1


def test_the_journal_queues_each_held_item_once_in_received_order(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    try:
        t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
        late = NewAttempt("call:late", t0 + timedelta(seconds=2), AttemptKind.CALL, Mode.OUTAGE,
                          "+15550100001", MAIN, Outcome.ANNOUNCED, delivery=Delivery.HELD)
        journal.record_attempt(late)
        journal.hold_email("email:a", t0 + timedelta(seconds=1), "p@mail.example",
                           ["desk@maple.example"], b"\x00\xffraw\r\n")
        # Imported later (the PBX's CDR) but received first: it goes out first.
        early = NewAttempt("call:early", t0, AttemptKind.CALL, Mode.OUTAGE, "+15550100002",
                           MAIN, Outcome.ANNOUNCED, delivery=Delivery.HELD)
        journal.record_attempt(early)
        journal.record_attempt(NewAttempt("call:normal", t0, AttemptKind.CALL, Mode.NORMAL,
                                          "+15550100003", MAIN, Outcome.RANG))
        assert journal.held() == {"call": 2, "email": 1}
        assert journal.enqueue_held() == 2
        assert journal.enqueue_held() == 0  # repeating it queues nothing twice
        queue = journal.next_inbox_items()
        assert [i.key for i in queue] == ["attempt:call:early", "email:a", "attempt:call:late"]
        # The queue carries no body (a backlog of big emails is not read at once) ...
        assert queue[1].email is not None and queue[1].email.data == b""
        # ... the drain reads one when it sends it.
        assert journal.held_email_data(queue[1].email.id) == b"\x00\xffraw\r\n"
        journal.inbox_retry(queue[0].id, t0, "HTTP 503 Service Unavailable")
        journal.inbox_accepted([queue[0].id], t0)
        journal.inbox_refused(queue[2].id, t0, "HTTP 422 Unprocessable Entity")
        assert [i.key for i in journal.next_inbox_items()] == ["email:a"]
        assert journal.attempt("call:early").delivery is Delivery.DELIVERED  # type: ignore[union-attr]
        assert journal.attempt("call:late").delivery is Delivery.FAILED  # type: ignore[union-attr]
        assert journal.held() == {"email": 1}
        [failed] = journal.inbox_items(ItemState.FAILED)
        assert (failed.tries, failed.last_error) == (1, "HTTP 422 Unprocessable Entity")
        [done] = journal.inbox_items(ItemState.DELIVERED)
        assert (done.tries, done.accepted_at) == (2, t0)
        # One drain at a time: another node waits for the lease; its holder renews it.
        assert journal.claim_drain("node:a", t0, t0 + timedelta(seconds=60))
        assert not journal.claim_drain("node:b", t0 + timedelta(seconds=30),
                                       t0 + timedelta(seconds=90))
        assert journal.claim_drain("node:a", t0 + timedelta(seconds=30),
                                   t0 + timedelta(seconds=90))
        assert journal.claim_drain("node:b", t0 + timedelta(seconds=90),
                                   t0 + timedelta(seconds=150))  # expired: taken over
        journal.release_drain("node:b")
        assert journal.claim_drain("node:a", t0 + timedelta(seconds=91),
                                   t0 + timedelta(seconds=151))
    finally:
        journal.close()


# -- the drain -------------------------------------------------------------------------------


async def test_a_flaky_inbox_that_restarts_gets_every_item_once_in_order(
        practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 300)
    journal.close()
    controller = await running(practice)
    try:
        assert practice.inbox.count() == 0  # nothing goes out while the outage holds
        assert sum(controller.journal.held().values()) == 300
        await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
        await practice.inbox.wait_for(150, within=120)
        await practice.inbox.restart()
        await practice.inbox.wait_for(300, within=120)
        assert controller.inbox is not None
        await controller.inbox.drained(within=60)
    finally:
        await stop(controller)
    assert_exactly_once_in_order(practice, keys)
    failures = practice.inbox.failures
    assert failures["dropped"] > 0 and failures["after"] > 0 and failures["before"] > 0
    assert practice.inbox.tries() > 300  # some items were filed, then sent again: no harm
    # Every item carried its file: faxes their PDF, emails their bytes.
    for doc in practice.inbox.items():
        if doc["kind"] == "fax":
            n = int(doc["key"].rsplit(":", 1)[1])
            pdf = (practice.tmp / "fax" / f"fax-{n}.pdf").read_bytes()
            assert base64.b64decode(doc["file"]["data"]) == pdf
            assert doc["file"]["type"] == "application/pdf"
    # The held notification fired once per item, when it was filed.
    assert [k for k, _ in practice.inbox.notifications()] == practice.inbox.keys()


async def test_sigkill_halfway_through_a_drain_of_1000_items_then_restart(
        practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 1000)
    engage(journal, Mode.NORMAL)  # `backline outage end`, while no controller runs
    journal.close()
    env = {**os.environ, "BACKLINE_INBOX_TOKEN": TOKEN}

    async def controller() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.inbox_runner", str(practice.config), cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        return proc

    first = await controller()
    await practice.inbox.wait_for(500, within=300)
    first.send_signal(signal.SIGKILL)  # no goodbye, no lease given back
    assert await first.wait() == -signal.SIGKILL
    assert practice.inbox.count() < 1000

    second = await controller()
    assert second.stdout is not None
    assert (await asyncio.wait_for(second.stdout.readline(), 600)).strip() == b"drained"
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0
    assert_exactly_once_in_order(practice, keys)


async def test_email_sent_in_an_outage_arrives_in_the_inbox_byte_for_byte(
        practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    journal.close()
    controller = await running(practice)
    message = (b"From: Pat <pat@mail.example>\r\nTo: frontdesk@maple.example\r\n"
               b"Subject: results\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               b"Line one, trailing spaces   \r\n.a line that starts with a dot\r\n"
               b"\r\n\tindented\r\n" + "caf\u00e9 \u2014 na\u00efve\r\n".encode())
    try:
        await aiosmtplib.send(message, sender="pat@mail.example",
                              recipients=["frontdesk@maple.example"], hostname="127.0.0.1",
                              port=practice.smtp_port)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(message, sender="pat@mail.example",
                                  recipients=["someone@elsewhere.example"],
                                  hostname="127.0.0.1", port=practice.smtp_port)
        assert refused.value.recipients[0].code == 550
        # Kept (before the 250), counted in the backlog, not sent while the outage holds.
        assert controller.journal.held() == {"email": 1}
        assert practice.inbox.count() == 0
        await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
        await practice.inbox.wait_for(1, within=60)
        assert controller.inbox is not None
        await controller.inbox.drained(within=60)
    finally:
        await stop(controller)
    [doc] = practice.inbox.items()
    assert base64.b64decode(doc["email"]) == message
    # Delivered: the journal keeps no copy of the patient's mail.
    journal = practice.journal()
    try:
        [item] = journal.inbox_items()
        assert item.email is not None and journal.held_email_data(item.email.id) == b""
    finally:
        journal.close()
    assert doc["kind"] == "email" and doc["to"] == ["frontdesk@maple.example"]
    assert doc["conversation"] == {"address": "frontdesk@maple.example",
                                   "party": "pat@mail.example"}


async def test_items_for_auto_assigned_tagged_numbers_file_to_the_owner_with_its_tags(
        practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    seed(journal, practice.tmp, 9)
    journal.close()
    controller = await running(practice)
    try:
        await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
        assert controller.inbox is not None
        await controller.inbox.drained(within=60)
    finally:
        await stop(controller)
    by_number: dict[str, list[dict[str, Any]]] = {}
    for doc in practice.inbox.items():
        by_number.setdefault(doc["to"], []).append(doc)
    for doc in by_number[ANA_LINE]:
        assert doc["assign_to"] == "user:ana"
        assert doc["conversation_tags"] == ["dr-lee"]
        assert doc["contact_tags"] == ["lee-patient"]
        assert doc["notify"] == {"users": ["ana"]}
        assert doc["conversation"] == {"number": ANA_LINE, "party": doc["from"]}
    for doc in by_number[DESK_LINE]:
        assert doc["assign_to"] == "team:front-desk"
        assert doc["conversation_tags"] == ["scheduling"]
        assert doc["notify"] == {"users": ["jo", "sam"]}
    for doc in by_number[MAIN]:
        assert doc["assign_to"] is None  # the shared inbox
        assert doc["conversation_tags"] == ["main-line"]
        assert doc["contact_tags"] == ["new-patient"]
        assert doc["notify"] == {"users": ["ana", "jo", "sam"]}
    assert all(len(docs) >= 2 for docs in by_number.values())
    # Every request carried the bearer token from token_env.
    with __import__("sqlite3").connect(practice.inbox.path) as db:
        assert {a for (a,) in db.execute("SELECT authorization FROM items")} == \
            {f"Bearer {TOKEN}"}


async def test_a_refused_item_is_reported_once_and_the_rest_still_arrive(
        practice: Practice, caplog: pytest.LogCaptureFixture) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 60, refuse_every=5)
    journal.close()
    refused = {k for k in keys if k.startswith("attempt:sms:") and int(k.rsplit(":", 1)[1]) % 5
               == 4}
    assert refused
    controller = await running(practice)
    try:
        with caplog.at_level(logging.ERROR, logger="backline.inbox"):
            await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
            assert controller.inbox is not None
            await controller.inbox.drained(within=60)
        failed = await asyncio.to_thread(controller.journal.inbox_items, ItemState.FAILED)
    finally:
        await stop(controller)
    assert {i.key for i in failed} == refused
    assert all(i.last_error == "HTTP 422 Unprocessable Entity" for i in failed)
    # Each refused item was refused once and never sent again; the rest arrived, in order.
    assert sorted(practice.inbox.refused_keys.values()) == [1] * len(refused)
    assert [d["key"] for d in practice.inbox.items()] == [k for k in keys if k not in refused]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == len(refused)
    assert not any("REFUSE-ME" in e or "+1555" in e for e in errors)  # no patient data
    # `backline attempts` shows each item's delivery state, the refusal's reason with it.
    status, out = await backline(practice, "attempts", "--json", "--limit", "1000")
    assert status == 0
    rows = {f"attempt:{r['key']}": r for r in json.loads(out)}
    for key in refused:
        assert rows[key]["delivery"] == "failed"
        assert rows[key]["delivery_error"] == "HTTP 422 Unprocessable Entity"
    assert {r["delivery"] for k, r in rows.items() if k not in refused} == {"delivered"}


async def test_outage_end_shows_the_drain_until_the_backlog_is_empty(practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 40, refuse_every=5)
    journal.close()
    controller = await running(practice)
    stop_polling = asyncio.Event()
    polling = asyncio.create_task(controller.keep_mode(stop_polling))  # as `backline run`
    try:
        status, out = await backline(practice, "outage", "end", "--by", "ops", *WAIT)
    finally:
        stop_polling.set()
        await polling
        await stop(controller)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("outage ended at ")
    assert lines[1].startswith("delivering 40 held item(s) to the inbox")
    assert "40/40 sent" in lines
    refused = [k for k in keys if "sms" in k and int(k.rsplit(":", 1)[1]) % 5 == 4]
    assert f"{40 - len(refused)} delivered; {len(refused)} refused by the inbox" in out
    assert sum("sms received" in line and "HTTP 422" in line for line in lines) == len(refused)
    assert "+1555" not in out and "REFUSE-ME" not in out  # which items, but no patient data
    assert len(practice.inbox.items()) == 40 - len(refused)


async def test_outage_end_no_wait_returns_at_once(practice: Practice) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    seed(journal, practice.tmp, 5)
    journal.close()
    status, out = await backline(practice, "outage", "end", "--no-wait", "--by", "ops")
    assert status == 0 and len(out.splitlines()) == 1  # no controller runs: nothing to wait on
    status, out = await backline(practice, "outage", "status", "--json")
    assert json.loads(out)["backlog"] == {"call": 2, "sms": 2, "fax": 1, "email": 0}


async def test_outage_end_without_an_inbox_token_says_the_items_cannot_be_delivered(
        practice: Practice, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    seed(journal, practice.tmp, 5)
    journal.close()
    monkeypatch.delenv("BACKLINE_INBOX_TOKEN")  # the controller starts without it
    caplog.set_level(logging.WARNING)
    journal = await asyncio.to_thread(practice.journal)
    controller = Controller(practice.directory(), journal)
    assert controller.inbox is None
    await controller.start()
    warned = [r.getMessage() for r in caplog.records if "inbox delivery is off" in r.getMessage()]
    assert len(warned) == 1 and "BACKLINE_INBOX_TOKEN" in warned[0]
    monkeypatch.setenv("BACKLINE_INBOX_TOKEN", TOKEN)  # the CLI's own environment has it
    stop_polling = asyncio.Event()
    polling = asyncio.create_task(controller.keep_mode(stop_polling))
    try:
        status, out = await backline(practice, "outage", "end", "--by", "ops", *WAIT)
        health = controller.health["inbox"]
    finally:
        stop_polling.set()
        await polling
        await stop(controller)
    assert status == 0, out
    assert "5 held item(s) cannot be delivered: the controller has no inbox token" in out
    assert "BACKLINE_INBOX_TOKEN" in out
    assert "keeps delivering" not in out
    assert health.verdict.value == "off" and "no inbox token" in health.says


def test_the_progress_bar_on_a_terminal() -> None:
    from backline.features.inbox.progress import bar

    assert bar(0, 300) == "[" + "-" * 30 + "] 0/300 sent"
    assert bar(150, 300) == "[" + "#" * 15 + "-" * 15 + "] 150/300 sent"
    assert bar(300, 300) == "[" + "#" * 30 + "] 300/300 sent"


# -- email intake: no patient address in the logs; a failing journal is a transient 451 --------


class _FailingOnce:
    """A journal whose first ``hold_email`` fails as a full disk does, then works."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.failures = 0

    def hold_email(self, *args: Any) -> int:
        if self.failures == 0:
            self.failures += 1
            import sqlite3
            raise sqlite3.OperationalError("database or disk is full")
        return self.journal.hold_email(*args)


async def _listener(p: Practice, journal: Any) -> Any:
    from backline.features.email_intake import EmailListener

    intake = p.directory().connections.email_intake
    listener = EmailListener(intake, journal, lambda: datetime.now(UTC), lambda: None)
    await listener.start()
    return listener


async def test_email_intake_writes_no_sender_or_recipient_address_to_the_logs(
        practice: Practice, caplog: pytest.LogCaptureFixture) -> None:
    journal = await asyncio.to_thread(practice.journal)
    caplog.set_level(logging.INFO)
    listener = await _listener(practice, journal)
    try:
        await aiosmtplib.send(b"Subject: hi\r\n\r\nhello\r\n", sender="pat@mail.example",
                              recipients=["frontdesk@maple.example"], hostname="127.0.0.1",
                              port=practice.smtp_port)
    finally:
        await listener.close()
    assert journal.held() == {"email": 1}
    journal.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "email intake" in logged  # the capture works: our own INFO line is there
    assert "pat@mail.example" not in logged and "frontdesk@maple.example" not in logged


async def test_a_journal_error_during_data_is_a_transient_451_and_nothing_is_lost(
        practice: Practice, caplog: pytest.LogCaptureFixture) -> None:
    journal = await asyncio.to_thread(practice.journal)
    failing = _FailingOnce(journal)
    listener = await _listener(practice, failing)
    message = b"Subject: results\r\n\r\nplease call me\r\n"
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await aiosmtplib.send(message, sender="pat@mail.example",
                                  recipients=["frontdesk@maple.example"], hostname="127.0.0.1",
                                  port=practice.smtp_port)
        assert info.value.code == 451  # 4xx: the sender's server keeps it and retries
        assert journal.held() == {}
        # The sender's retry, once the disk has room again: kept, byte for byte.
        await aiosmtplib.send(message, sender="pat@mail.example",
                              recipients=["frontdesk@maple.example"], hostname="127.0.0.1",
                              port=practice.smtp_port)
    finally:
        await listener.close()
    try:
        journal.enqueue_held()
        [item] = journal.next_inbox_items()
        assert item.email is not None and journal.held_email_data(item.email.id) == message
    finally:
        journal.close()
    assert "disk is full" not in caplog.text and "OperationalError" in caplog.text


# -- a wrong endpoint is not the items' fault; refused items can be put back ---------------------


async def test_an_inbox_answering_401_until_its_token_is_fixed_gets_every_item_once_in_order(
        practice: Practice, caplog: pytest.LogCaptureFixture) -> None:
    practice.inbox.fail_rate = 0.0
    practice.inbox.token = "the-token-ops-rotated"  # ours is now wrong: 401 to every request
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 20)
    journal.close()
    controller = await running(practice)
    try:
        with caplog.at_level(logging.ERROR, logger="backline.inbox"):
            await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
            await practice.inbox.wait_for_requests(4, within=30)
        # Nothing refused: every item is still held, waiting for the endpoint to be fixed.
        counts = await asyncio.to_thread(controller.journal.inbox_counts)
        assert counts == {"held": 20}
        practice.inbox.token = TOKEN  # ops fix the token
        assert controller.inbox is not None
        await controller.inbox.drained(within=60)
    finally:
        await stop(controller)
    assert_exactly_once_in_order(practice, keys)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("401" in e and "connections.inbox" in e for e in errors)
    assert not any("+1555" in e or "message " in e for e in errors)  # no patient data


async def test_requeue_failed_puts_refused_items_back_and_they_arrive_once(
        practice: Practice) -> None:
    practice.inbox.fail_rate = 0.0
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 20, refuse_every=5)
    journal.close()
    controller = await running(practice)
    try:
        await controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
        assert controller.inbox is not None
        await controller.inbox.drained(within=60)
        failed = await asyncio.to_thread(controller.journal.inbox_items, ItemState.FAILED)
        assert failed
        practice.inbox.refuse = lambda doc: False  # the inbox's side is fixed
        status, out = await backline(practice, "attempts", "--requeue-failed")
        assert status == 0 and out.startswith(f"{len(failed)} item(s) the inbox refused")
        await controller.inbox.drained(within=60)
    finally:
        await stop(controller)
    assert sorted(practice.inbox.keys()) == sorted(
        "backline-" + __import__("hashlib").sha256(k.encode()).hexdigest()[:40] for k in keys)
    filed = [d["key"] for d in practice.inbox.items()]
    assert sorted(filed) == sorted(keys)  # every item once
    assert filed[-len(failed):] == [i.key for i in failed]  # the requeued, in their order
    journal = practice.journal()
    try:
        assert journal.inbox_counts() == {"delivered": 20}
        assert all(a.delivery is Delivery.DELIVERED for a in journal.attempts(limit=1000))
    finally:
        journal.close()


# -- `backline outage end` with nobody delivering ------------------------------------------------


@pytest.mark.timeout(30)
def test_outage_end_stops_watching_when_nothing_moves(tmp_path: Path) -> None:
    import io

    from backline.features.inbox.progress import watch_drain

    journal = open_journal(f"sqlite://{tmp_path}/journal.db")
    try:
        engage(journal, Mode.OUTAGE)
        seed(journal, tmp_path, 5)
        engage(journal, Mode.NORMAL)  # no controller runs to deliver them
        out = io.StringIO()
        status = watch_drain(journal, out, tty=False, has_inbox=True,
                             local=lambda t: t.isoformat(), stall_after=1.0)
    finally:
        journal.close()
    assert status == 0
    assert out.getvalue().splitlines()[-1].startswith(
        "5 still held; the controller keeps delivering them")


# -- one drain per journal, even with two controllers on one host --------------------------------


async def test_two_drains_on_one_journal_post_each_item_once_in_order(
        practice: Practice) -> None:
    from backline.core.ownership import OwnershipBook
    from backline.features.inbox.service import InboxDrain

    practice.inbox.fail_rate = 0.0
    journal = practice.journal()
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 40)
    engage(journal, Mode.NORMAL)
    journal.close()
    journals = [await asyncio.to_thread(practice.journal) for _ in range(2)]
    book = OwnershipBook(practice.directory())
    drains = [InboxDrain(j, book, practice.inbox.url, TOKEN, lambda: Mode.NORMAL,
                         lambda: datetime.now(UTC), backoff=FAST) for j in journals]
    assert drains[0].holder != drains[1].holder
    try:
        for d in drains:
            d.start()
        await practice.inbox.wait_for(40, within=60)
    finally:
        for d in drains:
            await d.close()
        for j in journals:
            j.close()
    assert practice.inbox.requests == 40  # each item POSTed once: never by both
    assert_exactly_once_in_order(practice, keys)


def test_a_dead_holder_on_this_host_is_known_dead_and_a_live_one_is_not() -> None:
    from backline.features.inbox.service import holder_is_dead, process_holder

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = __import__("socket").gethostname()
    assert holder_is_dead(f"{host}:{proc.stdout.strip()}:abcd")  # exited: take over at once
    assert not holder_is_dead(process_holder())  # this process
    assert not holder_is_dead(f"{host}:1:abcd")  # running (init)
    assert not holder_is_dead("other-host:12345:abcd")  # cannot tell: wait for the lease
    assert not holder_is_dead("node:old-style")


# -- an SMS held in normal mode goes at once ------------------------------------------------------


async def test_an_attempt_held_in_normal_mode_wakes_the_drain(
        practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    import backline.features.inbox.service

    # The drain's nap (30 s) made an hour: only the new attempt's wake can send it before
    # the deadline below, which bounds a hang, not a promise timed on this test's clock.
    monkeypatch.setattr(backline.features.inbox.service, "MAX_NAP", 3600.0)
    practice.inbox.fail_rate = 0.0
    controller = await running(practice)
    try:
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)  # empty: the drain naps (up to an hour)
        attempt = NewAttempt("sms:normal-held", datetime.now(UTC), AttemptKind.SMS,
                             Mode.NORMAL, "+15550109999", MAIN, Outcome.RECEIVED,
                             text="refill please", delivery=Delivery.HELD)
        assert await controller.record_attempt(attempt)
        await practice.inbox.wait_for(1, within=30)  # long before the nap ends
    finally:
        await stop(controller)
    assert practice.inbox.keys() == [
        "backline-" + __import__("hashlib").sha256(b"attempt:sms:normal-held").hexdigest()[:40]]


# -- a fax file that cannot be read ---------------------------------------------------------------


async def test_only_a_fax_file_missing_on_its_own_node_is_refused(practice: Practice) -> None:
    from backline.core.ownership import OwnershipBook
    from backline.features.inbox.service import InboxDrain

    practice.inbox.fail_rate = 0.0
    journal = await asyncio.to_thread(practice.journal)
    at = datetime.now(UTC)
    a_dir = practice.tmp / "a-directory.pdf"
    a_dir.mkdir()
    faxes = {
        "here": ("node-a", str(practice.tmp / "gone.pdf")),  # recorded here, gone: refused
        "there": ("node-b", str(practice.tmp / "on-b.pdf")),  # on node b's disk: later
        "unreadable": ("node-a", str(a_dir)),  # an I/O problem ops can fix: later
    }
    for i, (name, (node, file)) in enumerate(faxes.items()):
        journal.record_attempt(NewAttempt(
            f"fax:{name}", at + timedelta(seconds=i), AttemptKind.FAX, Mode.OUTAGE,
            "+15550100001", MAIN, Outcome.RECEIVED, file=file, node=node,
            delivery=Delivery.HELD))
    drain = InboxDrain(journal, OwnershipBook(practice.directory()), practice.inbox.url, TOKEN,
                       lambda: Mode.NORMAL, lambda: datetime.now(UTC), backoff=FAST,
                       node="node-a")
    try:
        journal.enqueue_held()
        for item in journal.next_inbox_items():
            await drain._deliver(item)
        await drain._record_accepted()
        states = {i.key: (i.state, i.last_error) for i in journal.inbox_items()}
    finally:
        await drain.close()
        journal.close()
    assert states["attempt:fax:here"][0] is ItemState.FAILED
    assert states["attempt:fax:there"] == (ItemState.HELD,
                                           "the fax file is not on this node "
                                           "(No such file or directory)")
    assert states["attempt:fax:unreadable"][0] is ItemState.HELD
    assert practice.inbox.requests == 0


async def test_a_voicemail_recording_damaged_on_disk_still_arrives_and_blocks_nothing(
        practice: Practice) -> None:
    # The recording was checked when it was kept; a disk error may still damage it later.
    # Its length can no longer be read, but its bytes are sent as they are (the inbox may
    # yet play them), and the items behind it in the queue are never held up by it.
    from backline.core.ownership import OwnershipBook
    from backline.features.inbox.service import InboxDrain

    practice.inbox.fail_rate = 0.0
    journal = await asyncio.to_thread(practice.journal)
    at = datetime.now(UTC)
    damaged = practice.tmp / "voicemail-1733300000-00000001.wav"
    damaged.write_bytes(b"RIFF\x00\x00")  # cut short
    journal.record_attempt(NewAttempt(
        "voicemail:damaged", at, AttemptKind.VOICEMAIL, Mode.NORMAL, "+15550100001", MAIN,
        Outcome.VOICEMAIL, file=str(damaged), delivery=Delivery.HELD))
    journal.record_attempt(NewAttempt(
        "sms:after", at + timedelta(seconds=1), AttemptKind.SMS, Mode.NORMAL, "+15550100002",
        MAIN, Outcome.RECEIVED, text="Is the clinic open?", delivery=Delivery.HELD))
    drain = InboxDrain(journal, OwnershipBook(practice.directory()), practice.inbox.url, TOKEN,
                       lambda: Mode.NORMAL, lambda: datetime.now(UTC), backoff=FAST)
    drain.start()
    try:
        await drain.drained(within=30)
    finally:
        await drain.close()
        journal.close()
    voicemail, sms = practice.inbox.items()
    assert base64.b64decode(voicemail["file"]["data"]) == damaged.read_bytes()
    assert voicemail["file"]["type"] == "audio/wav"
    assert voicemail["voicemail"] == {"duration_seconds": None}
    assert sms["text"] == "Is the clinic open?"


def drain_lease_until(practice: Practice) -> datetime:
    """When the drain lease ends, as the journal's own row says (read only)."""
    uri = f"file:{practice.tmp / 'journal.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        (until,) = db.execute("SELECT lease_until FROM inbox_lease WHERE name = 'drain'"
                              ).fetchone()
    return from_text(until)


async def test_the_drain_lease_is_renewed_while_a_long_try_runs(
        practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    import backline.features.inbox.service
    from backline.core.ownership import OwnershipBook
    from backline.features.inbox.service import InboxDrain

    lease = 0.4
    monkeypatch.setattr(backline.features.inbox.service, "LEASE_SECONDS", lease)
    practice.inbox.fail_rate = 0.0
    practice.inbox.hold = asyncio.Event()  # the inbox takes its time over the first item
    journal = await asyncio.to_thread(practice.journal)
    engage(journal, Mode.OUTAGE)
    keys = seed(journal, practice.tmp, 3)
    engage(journal, Mode.NORMAL)
    drain = InboxDrain(journal, OwnershipBook(practice.directory()), practice.inbox.url, TOKEN,
                       lambda: Mode.NORMAL, lambda: datetime.now(UTC), backoff=FAST)
    other = await asyncio.to_thread(practice.journal)
    try:
        drain.start()
        await practice.inbox.wait_for_requests(1, within=30)
        # The try, held by the inbox, outlasts the lease it started with: the journal's row
        # shows the lease renewed meanwhile (polled: the journal raises no event; 30 s only
        # bounds a hang) ...
        started_with = await asyncio.to_thread(drain_lease_until, practice)
        deadline = asyncio.get_running_loop().time() + 30
        while (renewed := await asyncio.to_thread(drain_lease_until, practice)) <= started_with:
            assert asyncio.get_running_loop().time() < deadline, "the lease was never renewed"
            await asyncio.sleep(0.02)  # a poll of the journal's row, not a wait for time
        # ... so at a moment past the lease it started with (the journal's times, not this
        # test's clock, which a loaded machine stretches), nobody else may start draining.
        past = started_with + (renewed - started_with) / 2
        assert not other.claim_drain("another:1:x", past, past + timedelta(seconds=60))
        practice.inbox.hold.set()
        await drain.drained(within=30)
    finally:
        await drain.close()
        journal.close()
        other.close()
    assert practice.inbox.requests == 3
    assert_exactly_once_in_order(practice, keys)
