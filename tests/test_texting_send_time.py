"""A staff text is decided again right before it is handed to the gateway (issue 20, part 2):
what changed while it waited (a 503's retry, a queue) may refuse it then.  The controller as
`backline run` wires it, over a real SQLite journal, against the Twilio-format stand-in;
the changes made as ops make them (the CLI, the reload SIGHUP runs, an outage engaged)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backline.app.reload import Reloader
from backline.core.outage import Mode
from backline.features.texting.sender import BACKOFF, LEASE_SECONDS
from backline.journal import open_journal
from backline.journal.texts import TextState
from tests.harness.postgres import JournalBackend
from tests.harness.sms_gateway import AUTH_TOKEN, TwilioGateway
from tests.test_texting import MAIN, PATIENT, ROOT, SMS_ENV, TEXT, TOKEN_ENV, Clinic, sent


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


def backline(clinic: Clinic, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args, "--config",
                           str(clinic.config)], input=stdin, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


async def waiting_after_a_503(clinic: Clinic, key: str, user: str) -> None:
    """``user``'s text to the patient, refused once by the gateway with a 503: due again."""
    clinic.gateway.fail_next(1, 503)
    status, answer = await clinic.text(key, user, MAIN, PATIENT)
    assert status == 202, answer
    await clinic.settle()
    shown = await clinic.show(key)
    assert (shown["state"], shown["detail"]) == ("failed", "HTTP 503")
    assert clinic.gateway.requests == 1 and clinic.gateway.sent == []


async def due_again(clinic: Clinic) -> None:
    """Its retry falls due, and hours pass: every round there is to send it has run."""
    clinic.clock.advance(BACKOFF.delay(1))
    await clinic.settle()
    for _ in range(2):
        clinic.clock.advance(3600)
        await clinic.settle()


async def removed_by_the_cli(clinic: Clinic) -> None:
    removed = await asyncio.to_thread(backline, clinic, "conversation", "remove", MAIN,
                                      PATIENT, "sam", "--by", "ana")
    assert removed.returncode == 0, removed.stderr
    await clinic.c.sync_once()  # the round `backline run` runs each second: it reads it


async def engaged_by_the_cli(clinic: Clinic) -> None:
    engaged = await asyncio.to_thread(backline, clinic, "outage", "engage", "--reason",
                                      "carrier down", "--by", "ops", "--no-wait")
    assert engaged.returncode == 0, engaged.stderr
    await clinic.c.sync_once()
    assert clinic.c.mode() is Mode.OUTAGE


def reloaded(old: str, new: str) -> Callable[[Clinic], Awaitable[None]]:
    """The YAML changed (``old`` -> ``new``) and reloaded live: the reload SIGHUP and
    `backline reload` run (backline/app/reload.py)."""
    async def change(clinic: Clinic) -> None:
        yaml = clinic.config.read_text()
        assert yaml.count(old) == 1, old
        clinic.config.write_text(yaml.replace(old, new))
        result = await Reloader(str(clinic.config), clinic.c, None, clinic.clock).reload()
        assert result.applied, result
    return change


JO = "{id: jo, name: Jo Park, email: jo@t.example}"
REFUSED_LATER = {
    # who texts, what changes while the text waits, why it is refused then
    "removed-from-the-conversation": ("sam", removed_by_the_cli, "not-a-member"),
    "outage-engaged": ("ana", engaged_by_the_cli, "outage"),
    "user-deactivated": ("jo", reloaded(JO, JO[:-1] + ", active: false}"), "unknown-user"),
    "number-lost-its-member": ("jo", reloaded('members: ["user:jo"],', ""), "not-a-member"),
    "number-unregistered": ("jo", reloaded("texting_registered: true",
                                           "texting_registered: false"), "unregistered"),
}


@pytest.mark.parametrize("case", REFUSED_LATER)
async def test_a_text_waiting_to_be_retried_is_refused_when_its_sender_may_no_longer_send_it(
        clinic: Clinic, case: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user, change, why = REFUSED_LATER[case]
    if user == "sam":
        status, _ = await clinic.api("/conversations/add", {
            "number": MAIN, "party": PATIENT, "user": "sam", "by": "ana"})
        assert status == 200
    await waiting_after_a_503(clinic, "later-1", user)

    await change(clinic)
    await due_again(clinic)
    await clinic.restart()
    await clinic.settle()

    assert clinic.gateway.requests == 1 and clinic.gateway.sent == []  # never sent
    shown = await clinic.show("later-1")
    assert shown["state"] == "not-sent" and shown["tries"] == 1, shown
    if why != "outage":  # an outage closes open texts as it is engaged (its own words)
        assert shown["detail"].startswith(f"refused before it was sent ({why}): "), shown
    refusals = [e for e in clinic.journal.audit_log() if e.action == "text.refused"]
    if why != "outage":
        assert [(e.actor, e.detail.split(":")[0]) for e in refusals] == [(user, why)]
    words = shown["detail"] + "".join(e.detail for e in refusals) + caplog.text
    assert "lisinopril" not in words and PATIENT not in words


async def test_a_text_still_allowed_after_a_reload_is_sent_once(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await waiting_after_a_503(clinic, "still-1", "jo")
    await reloaded("name: Sam Reyes", "name: Sam Reyes-Park")(clinic)
    await due_again(clinic)
    await clinic.restart()
    await clinic.settle()
    assert sent(clinic.gateway) == [(MAIN, PATIENT, TEXT)] and clinic.gateway.requests == 2
    shown = await clinic.show("still-1")
    assert (shown["state"], shown["tries"], shown["detail"]) == ("sent", 2, "")
    assert not [e for e in clinic.journal.audit_log() if e.action == "text.refused"]


def test_a_text_is_refused_at_its_try_only_by_the_holder_of_its_claim_on_every_backend(
        journal_backend: JournalBackend) -> None:
    """The journal's side on SQLite and PostgreSQL: closed as refused once, by the controller
    whose claim holds, with its last try's error kept and the refusal audited as its user's."""
    journal = open_journal(journal_backend.url)
    try:
        now = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
        lease = now + timedelta(seconds=LEASE_SECONDS)
        text, _ = journal.add_text("r", now, "sam", MAIN, PATIENT, TEXT)
        [claimed] = journal.claim_due_texts(now, lease, "me")
        assert journal.text_handed(claimed.id, now, "me")
        journal.text_failed(claimed.id, now, "HTTP 503")
        [claimed] = journal.claim_due_texts(now, lease, "me")
        why = "refused before it was sent (not-a-member): sam is not a member"
        assert not journal.text_refused(text.id, now, "other", why, "not-a-member: sam")
        assert not journal.text_refused(text.id, lease, "me", why, "not-a-member: sam")
        assert journal.text_refused(text.id, now, "me", why, "not-a-member: sam")
        assert not journal.text_refused(text.id, now, "me", why, "not-a-member: sam")
        closed = journal.text_by_key("r")
        assert closed is not None and (closed.state, closed.tries, closed.detail) == (
            TextState.NOT_SENT, 1, f"{why} (last try: HTTP 503)")
        assert [(e.actor, e.action, e.detail) for e in journal.audit_log()
                if e.action == "text.refused"] == [("sam", "text.refused", "not-a-member: sam")]
        assert journal.claim_due_texts(lease, lease + timedelta(seconds=60), "me") == []
        assert journal.next_text_at() is None
    finally:
        journal.close()


async def test_a_text_queued_while_no_controller_runs_is_decided_by_the_practice_it_starts_with(
        clinic: Clinic) -> None:
    """`backline text send` journals a text while the controller is down; jo is deactivated
    before it starts again: the text waiting in the queue is refused, never sent."""
    await clinic.stop()
    queued = await asyncio.to_thread(backline, clinic, "text", "send", MAIN, PATIENT, "--as",
                                     "jo", "--key", "queued-1", stdin=TEXT)
    assert queued.returncode == 0, queued.stderr
    clinic.config.write_text(clinic.config.read_text().replace(JO, JO[:-1] + ", active: false}"))
    await clinic.start()
    asked = clinic.journal.text_by_key("queued-1")
    assert asked is not None
    clinic.clock.now = max(clinic.clock.now, asked.at)  # the CLI journals at the wall clock
    await clinic.settle()
    shown = await clinic.show("queued-1")
    assert (shown["state"], shown["tries"]) == ("not-sent", 0), shown
    assert shown["detail"] == "refused before it was sent (unknown-user): no active user 'jo' " \
        "in the directory"
    assert clinic.gateway.requests == 0
