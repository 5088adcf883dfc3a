"""Adding a teammate to one conversation, on the real Asterisk with SIPp desk phones and a
SIPp carrier, against `backline run` as ops run it: the change made with `backline
conversation` (or the token-authenticated API on the status listener) reaches the running
controller without a restart, holds across one, and is journaled and audited."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from backline.core.conversations import (
    CannotRemoveNumberMember,
    ConversationBook,
    ConversationKey,
    ConversationRefused,
    addition,
    removal,
)
from backline.core.ownership import OwnershipBook
from backline.features.conversations import ConversationMembers
from backline.journal import open_journal
from backline.journal.conversations import ADD, REMOVE
from tests.harness.backline_process import ROOT, ControllerProcess
from tests.harness.postgres import JournalBackend
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, SippProcess, answering_phone
from tests.practice import directory, number, u, user
from tests.test_asterisk_calls import call_out

DIRECT, MAIN = "+13125550101", "+13125550100"  # Dr. Lee's line: ana and the nurses
PATIENT, OTHER = "+17205550141", "+17205550199"
TOKEN_ENV = "BACKLINE_TEST_CONVERSATION_TOKEN"


def backline(p: PracticePbx, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args, "--config",
                           str(p.config_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


async def refused(p: PracticePbx, tmp: Path, phone: str, digits: str, carrier: SippProcess,
                  before: int) -> None:
    """The desk phone hears the refusal, and the carrier sees nothing new."""
    def plays() -> int:
        return sum(e.get("AppData") == "cannot-complete-as-dialed" for e in p.events.seen)

    before_plays = plays()
    await call_out(p, tmp, phone, digits)
    await p.events.wait_for(lambda _: plays() > before_plays)
    assert len(carrier.invites()) == before


async def placed(p: PracticePbx, tmp: Path, phone: str, digits: str, carrier: SippProcess,
                 count: int) -> None:
    """The call went out to the carrier as the ``count``-th, with Dr. Lee's line's caller ID."""
    await call_out(p, tmp, phone, digits)
    invite = (await asyncio.to_thread(carrier.wait_for_invites, count, 30))[count - 1]
    pai = invite.header("P-Asserted-Identity") or ""
    assert DIRECT in pai and "Dr Ana Lee" in pai, pai
    assert DIRECT in (invite.header("From") or "")
    assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")


async def api(port: int, path: str, body: dict[str, str], token: str | None
              ) -> tuple[int, dict[str, object] | str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as r:
        text = await r.text()
        return r.status, json.loads(text) if r.content_type == "application/json" else text


@pytest.mark.asterisk
async def test_a_teammate_added_to_one_conversation_calls_that_party_only_until_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    from tests.harness.alert_site import free_port

    ops = free_port()
    extra = f'  status: {{listen: "127.0.0.1:{ops}", token_env: {TOKEN_ENV}}}\n'
    async with practice_pbx(tmp_path, "conv", controller_in_process=False,
                            connections_extra=extra) as pbx:
        carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                                  port=pbx.ports.trunk, talk_ms=200)
        run = ControllerProcess(pbx)
        sam_to_patient = "*7" + DIRECT[2:] + PATIENT
        try:
            # Sam is not a member of Dr. Lee's line: refused, the carrier sees nothing.
            await refused(pbx, tmp_path, "sam-desk", sam_to_patient, carrier, 0)

            # Ana adds Sam to that one conversation; the running controller takes it up.
            added = backline(pbx, "conversation", "add", DIRECT, "(720) 555-0141", "sam",
                             "--by", "ana")
            assert added.returncode == 0, added.stderr
            assert f"sam added to the conversation of {DIRECT} with {PATIENT} by ana" \
                in added.stdout
            run.wait_for("(change #1)", 60)
            await placed(pbx, tmp_path, "sam-desk", sam_to_patient, carrier, 1)
            # Another party from that number: still refused.
            await refused(pbx, tmp_path, "sam-desk", "*7" + DIRECT[2:] + OTHER, carrier, 1)

            # A controller restart keeps the addition (read from the journal at start).
            run.stop()
            run = ControllerProcess(pbx)
            await placed(pbx, tmp_path, "sam-desk", sam_to_patient, carrier, 2)

            listed = backline(pbx, "conversation", "list", DIRECT, "--json")
            assert [(m["party"], m["user"], m["added_by"], m["via"])
                    for m in json.loads(listed.stdout)] == [(PATIENT, "sam", "ana", "cli")]

            # The API, on the status listener, only with its token.
            body = {"number": DIRECT, "party": PATIENT, "user": "sam", "by": "jo"}
            assert (await api(ops, "/conversations/remove", body, None))[0] == 401
            assert (await api(ops, "/conversations/remove", body, token + "x"))[0] == 401
            # A member of the number cannot be removed from one of its conversations: why.
            status, answer = await api(ops, "/conversations/remove", body | {"user": "ana"},
                                       token)
            assert status == 409 and isinstance(answer, dict), answer
            assert answer["refused"] == f"ana is a member of {DIRECT} and sees all its " \
                "conversations"
            removed_member = backline(pbx, "conversation", "remove", DIRECT, PATIENT, "mia")
            assert removed_member.returncode == 2
            assert f"mia is a member of {DIRECT} and sees all its conversations; nothing " \
                "changed" in removed_member.stderr
            # Jo removes Sam through the API: in effect at once, refused again.
            status, answer = await api(ops, "/conversations/remove", body, token)
            assert (status, answer) == (200, {"number": DIRECT, "party": PATIENT,
                                              "user": "sam", "action": "remove",
                                              "changed": True})
            await refused(pbx, tmp_path, "sam-desk", sam_to_patient, carrier, 2)
        finally:
            run.stop()
            carrier.kill()
        assert PATIENT not in "".join(run.lines)  # the log names the party by its last digits
    journal = open_journal(pbx.directory.connections.storage.url)
    try:
        audit = [(e.actor, e.action, e.detail) for e in reversed(journal.audit_log())
                 if e.action.startswith("conversation.")]
        changes = [(c.by, c.via, c.action, c.key.user_id)
                   for c in reversed(journal.conversation_changes())]
        assert journal.conversation_members() == []
    finally:
        journal.close()
    assert audit == [
        ("ana", "conversation.add",
         f"added sam to the conversation of {DIRECT} with …41 (via cli)"),
        ("jo", "conversation.remove",
         f"removed sam from the conversation of {DIRECT} with …41 (via api)")]
    assert changes == [("ana", "cli", "add", "sam"), ("jo", "api", "remove", "sam")]


def test_what_cannot_be_added_or_removed_says_why() -> None:
    book = OwnershipBook(directory([user("ana"), user("sam"), user("old", active=False)], [],
                                   [number(DIRECT, u("ana")), number(MAIN)]))
    with pytest.raises(CannotRemoveNumberMember, match="sees all its conversations"):
        ConversationBook().remove(book, DIRECT, PATIENT, "ana")
    with pytest.raises(CannotRemoveNumberMember, match="sees all its conversations"):
        removal(book, DIRECT, PATIENT, "ana")
    for number_, party, who, why in (
            (DIRECT, PATIENT, "ana", "ana is a member of .* already sees all"),
            ("+13125550177", PATIENT, "sam", "not one of the practice's"),
            (DIRECT, "nobody", "sam", "the party is not an E.164"),
            (DIRECT, MAIN, "sam", "is a practice number"),
            (DIRECT, PATIENT, "old", "no active user 'old'"),
            (DIRECT, PATIENT, "ghost", "no active user 'ghost'")):
        with pytest.raises(ConversationRefused, match=why):
            addition(book, number_, party, who)
    key = addition(book, "3125550101", "1 720 555 0141", "sam")
    assert (key.number, key.party, key.user_id) == (DIRECT, PATIENT, "sam")
    held = ConversationBook()
    held.hold([key])
    assert held.is_added(book, DIRECT, PATIENT, "sam")
    held.hold([])
    assert not held.is_added(book, DIRECT, PATIENT, "sam")


def test_changes_are_journaled_once_with_the_audit_on_every_backend(
        journal_backend: JournalBackend) -> None:
    journal = open_journal(journal_backend.url)
    try:
        key = ConversationKey(DIRECT, PATIENT, "sam")
        at = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
        assert journal.conversation_version() == (0, 0)
        assert journal.change_conversation(ADD, key, at, "ana", "cli")
        assert not journal.change_conversation(ADD, key, at, "jo", "api")  # already added
        (member,) = journal.conversation_members()
        assert (member.key, member.added_at, member.added_by, member.via) == \
            (key, at, "ana", "cli")
        assert journal.conversation_version() == (1, 1)
        assert journal.conversation_keys() == [(DIRECT, PATIENT, "sam")]
        assert journal.conversation_changes_after(0) == ([(1, ADD, DIRECT, PATIENT, "sam")],
                                                         (1, 1))
        assert journal.conversation_changes_after(1) == ([], (1, 1))
        assert journal.change_conversation(REMOVE, key, at, "jo", "api")
        assert not journal.change_conversation(REMOVE, key, at, "jo", "api")  # not added
        assert journal.conversation_members() == []
        assert [c.action for c in journal.conversation_changes()] == [REMOVE, ADD]
        assert journal.conversation_version()[0] == 2
        assert [(e.actor, e.action) for e in journal.audit_log()] == \
            [("jo", "conversation.remove"), ("ana", "conversation.add")]
    finally:
        journal.close()


async def test_a_running_controller_takes_in_each_change_and_reads_all_when_one_was_missed(
        tmp_path: Path) -> None:
    # Only the new changes are read (a practice with 100,000 conversations read them all on
    # each one); a change committed late under a lower id (PostgreSQL) must still be seen.
    url = f"sqlite://{tmp_path / 'journal.db'}"
    writer, reader = open_journal(url), open_journal(url)
    book = OwnershipBook(directory([user("ana"), user("sam"), user("jo")], [],
                                   [number(DIRECT, u("ana"))]))
    held = ConversationBook()
    members = ConversationMembers(reader, book, held, lambda: datetime.now(UTC))
    at = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    try:
        members.load()
        assert not await members.refresh()
        writer.change_conversation(ADD, ConversationKey(DIRECT, PATIENT, "sam"), at, "ana",
                                   "cli")
        assert await members.refresh()
        assert held.is_added(book, DIRECT, PATIENT, "sam")
        writer.change_conversation(REMOVE, ConversationKey(DIRECT, PATIENT, "sam"), at, "ana",
                                   "cli")
        writer.change_conversation(ADD, ConversationKey(DIRECT, OTHER, "jo"), at, "ana", "cli")
        assert await members.refresh()
        assert not held.is_added(book, DIRECT, PATIENT, "sam")
        assert held.is_added(book, DIRECT, OTHER, "jo")
        # Committed late under an id below the newest, as two PostgreSQL writers can.
        with writer._lock, writer._transaction() as cur:
            cur.execute("INSERT INTO conversation_members (number, party, user_id, added_at, "
                        "added_by, via) VALUES (?, ?, 'jo', '', 'ana', 'cli')",
                        (DIRECT, PATIENT))
            cur.execute("INSERT INTO conversation_changes (id, at, by_whom, via, action, "
                        "number, party, user_id) VALUES (0, '', 'ana', 'cli', ?, ?, ?, 'jo')",
                        (ADD, DIRECT, PATIENT))
        assert await members.refresh()
        assert held.is_added(book, DIRECT, PATIENT, "jo")
        assert held.is_added(book, DIRECT, OTHER, "jo")
    finally:
        writer.close()
        reader.close()
