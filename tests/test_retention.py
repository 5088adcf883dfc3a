"""Retention (``connections.storage.delivered_days``): Backline's copies of faxes and voicemail
the inbox accepted more than N days ago are removed, with the PBX spool's copy of each
message, and nothing else; the journal's records stay and say so.

The decision table is the pure core's.  The rest runs on a real SQLite journal, the real fax
intake (a TIFF in the spool, converted and verified), the real voicemail intake (messages in
app_voicemail's spool layout), the real inbox drain posting to the tests' inbox server (which
accepts, refuses, or fails so that the answer is never known), and the controller's clock
moved by hand.  ``backline doctor``'s store-disk line is read off small tmpfs mounts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backline.app import config
from backline.app.controller import Controller
from backline.core.fax_intake import FaxEnd, FaxStatus
from backline.core.outage import Mode, ModeState
from backline.core.records import (
    AlertChannel,
    Attempt,
    AttemptKind,
    JoinAlert,
    OpenAlert,
    Pruned,
)
from backline.core.retention import Kept, Stores, due
from backline.features.links import tokens as links
from backline.features.links.server import make_link_app
from backline.features.links.voicemail_server import make_voicemail_app
from backline.features.retention import RetentionFeature
from backline.features.voicemail.locks import lock_fix
from backline.journal import (
    AuditEntry,
    Delivery,
    Journal,
    JournalError,
    NewAttempt,
    Outcome,
    open_journal,
)
from backline.pbx.fax_desk import spool_name
from backline.pbx.spool_lock import HeldLock, started
from tests.fax_samples import STANDARD, fax_tiff, letter
from tests.harness.alert_site import FakeClock, free_port
from tests.harness.inbox_server import InboxServer
from tests.harness.postgres import JournalBackend
from tests.test_alerts import spellings
from tests.test_journal_disk import fill_to
from tests.test_voicemail_core import wav

ROOT = Path(__file__).resolve().parent.parent
PATIENT, REFUSED = "+17205550141", "+17735550188"
VOICE, BOX, FAX = "+13125550102", "3125550102", "+13125550109"
DAYS = 30
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TOKEN_ENV, TOKEN = "BACKLINE_TEST_RETENTION_INBOX", "retention-inbox-token"
YAML = """\
practice: {{name: Maple Street Family Medicine, timezone: America/Chicago}}
users: [{{id: ana, name: Dr. Ana Lee, email: ana@maple.example}}]
numbers:
  - {{number: "{voice}", carries: [voice], owner: "user:ana"}}
  - {{number: "{fax}", carries: [fax]}}
connections:
  pbx: {{ami: {{port: {ami}, secret_env: BACKLINE_TEST_RETENTION_AMI}},
        fax_dir: {tmp}/fax, spool_dir: {tmp}/spool}}
  inbox: {{url: "{inbox}", token_env: {token_env}}}
  storage: {{url: "sqlite://{tmp}/journal.db"{days}}}
"""


def test_only_items_the_inbox_accepted_more_than_n_days_ago_are_due() -> None:
    stores = Stores("/var/lib/backline/fax", "/var/lib/backline/voicemail")
    now = T0 + timedelta(days=DAYS, seconds=1)

    def kept(key: str, kind: AttemptKind, file: str, delivery: Delivery = Delivery.DELIVERED,
             accepted: datetime | None = T0, node: str = "", pruned: bool = False) -> Kept:
        a = Attempt(len(key), key, T0, kind, Mode.OUTAGE, PATIENT, FAX, Outcome.RECEIVED, "",
                    file, "", node, delivery, "", Pruned(T0, 1) if pruned else None)
        return Kept(a, accepted)

    fax, vm = AttemptKind.FAX, AttemptKind.VOICEMAIL
    pdf = "/var/lib/backline/fax/fax-1.1.pdf"
    table = [
        kept("fax:1.1", fax, pdf),                                             # due
        kept("voicemail:1-a", vm, "/var/lib/backline/voicemail/voicemail-1-a.wav"),  # due
        kept("fax:1.2", fax, pdf, accepted=T0 + timedelta(seconds=1)),         # exactly N days
        # The journal's state alone keeps these (whatever a time says):
        kept("fax:1.3", fax, pdf, Delivery.HELD),                              # held, in doubt
        kept("fax:1.4", fax, pdf, Delivery.FAILED),                            # refused
        kept("fax:1.5", fax, pdf, Delivery.NOT_NEEDED),                        # never an item
        kept("fax:1.6", fax, pdf, accepted=None),                              # no acceptance
        kept("fax:1.7", fax, pdf, pruned=True),                                # removed before
        kept("fax:1.8", fax, pdf, node="node2"),                               # another host
        kept("fax:1.9", fax, "/var/spool/asterisk/fax-1.9.tif"),               # in the spool
        kept("fax:2.1", fax, "/var/lib/backline/fax/../../../etc/passwd"),      # not a store's
        kept("voicemail:2-b", vm, pdf),                                        # wrong store
        kept("call:3.1", AttemptKind.CALL, pdf),                               # no file of ours
    ]
    removals = due(table, now, DAYS, stores)
    assert [(r.files, r.spooled) for r in removals] == [
        ((pdf, "/var/lib/backline/fax/fax-1.1.tif"), ""),
        (("/var/lib/backline/voicemail/voicemail-1-a.wav",), "1-a")]
    assert due(table, now, DAYS, stores, node="node2")[0].files[0] == pdf  # that node's own


def test_the_journal_lists_what_the_inbox_accepted_and_marks_it_once(
        journal_backend: JournalBackend) -> None:
    j = open_journal(journal_backend.url)
    try:
        for n, delivery in enumerate((Delivery.HELD, Delivery.HELD, Delivery.NOT_NEEDED)):
            j.record_attempt(NewAttempt(f"fax:1.{n}", T0, AttemptKind.FAX, Mode.OUTAGE,
                                        PATIENT, FAX, Outcome.RECEIVED,
                                        file=f"/f/fax-1.{n}.pdf", delivery=delivery))
        j.enqueue_held()
        first, second = j.next_inbox_items()
        j.inbox_accepted([first.id], T0)
        j.inbox_refused(second.id, T0, "HTTP 422")
        cut = T0 + timedelta(seconds=1)
        [kept] = j.kept_delivered("", cut)
        assert (kept.attempt.key, kept.accepted_at) == ("fax:1.0", T0)
        assert j.kept_delivered("", T0) == [] and j.kept_delivered("node2", cut) == []
        entry = AuditEntry(cut, "retention", "retention.removed", "attempt 1 (fax)")
        assert j.mark_pruned(kept.attempt.id, cut, DAYS, entry)
        assert not j.mark_pruned(kept.attempt.id, cut, DAYS, entry)  # once
        assert [e.detail for e in j.audit_log()] == ["attempt 1 (fax)"]
        assert j.kept_delivered("", cut) == []
        pruned = j.attempt("fax:1.0")
        assert pruned is not None and pruned.pruned == Pruned(cut, DAYS)
        assert j.item_of_attempts([pruned.id])[pruned.id].attempt == pruned
    finally:
        j.close()


@pytest.mark.parametrize("value", ["0", "thirty", "3651"])
def test_a_bad_delivered_days_is_named_at_its_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("practice: {name: P, timezone: UTC}\nconnections:\n"
                    f"  storage: {{url: 'sqlite:j.db', delivered_days: {value}}}\n")
    found = backline("check", str(path))
    assert found.returncode == 2
    assert f"{path}:3: connections.storage.delivered_days: a whole number from 1 to 3650" \
        in found.stderr, found.stderr


def backline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def spool_message(spool: Path, n: int, msg_id: str, at: datetime, caller: str) -> Path:
    """A message as app_voicemail leaves it in the box's INBOX; its text file."""
    folder = spool / "voicemail" / "backline" / BOX / "INBOX"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"msg{n:04d}.wav").write_bytes(wav(8000 * (n + 2)))
    info = folder / f"msg{n:04d}.txt"
    info.write_text(f"[message]\norigmailbox={BOX}\ncontext=backline-voicemail\n"
                    f"callerchan=PJSIP/carrier-0000000{n}\ncallerid=\"Pat\" <{caller}>\n"
                    f"origtime={int(at.timestamp())}\nmsg_id={msg_id}\nduration={n + 2}\n")
    return info


def files(*roots: Path) -> dict[Path, bytes]:
    """Every file under ``roots`` (or each root that is a file), with its bytes."""
    return {p: p.read_bytes() for root in roots
            for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()}


@dataclass
class Practice:
    tmp: Path
    path: Path
    inbox: InboxServer
    clock: FakeClock
    journal: Journal
    controller: Controller
    keys: dict[str, str]  # the test's name of each item -> its journal key

    def open(self) -> Controller:
        """The controller over a fresh journal connection, as after a restart."""
        self.journal = open_journal(f"sqlite://{self.tmp}/journal.db")
        self.controller = Controller(config.load(self.path).directory, self.journal,
                                     clock=self.clock)
        return self.controller

    async def restart(self) -> Controller:
        await self.controller.close()
        self.journal.close()
        controller = self.open()
        await controller.start()
        retention = controller.feature(RetentionFeature)
        assert retention is not None
        await controller.import_pbx_record()  # the spool's place known: retention runs
        await asyncio.wait_for(retention.service.round_done.wait(), 30)
        return controller

    def audited(self) -> list[str]:
        return [e.detail for e in self.journal.audit_log(1000) if e.action == "retention.removed"]


@pytest.fixture()
async def practice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Practice]:
    """Faxes A (accepted), C (refused by the inbox) and G (normal mode: never an inbox item),
    voicemail B (accepted), I (held: a try whose answer never came) and H (held, never
    tried), every file on disk, the clock at T0 + DAYS (nothing due yet)."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    inbox = InboxServer(tmp_path / "inbox.db", token=TOKEN,
                        refuse=lambda doc: REFUSED in json.dumps(doc))
    await inbox.start()
    path = tmp_path / "practice.yaml"
    path.write_text(YAML.format(voice=VOICE, fax=FAX, ami=free_port(), tmp=tmp_path,
                                inbox=inbox.url, token_env=TOKEN_ENV,
                                days=f", delivered_days: {DAYS}"))
    p = Practice(tmp_path, path, inbox, FakeClock(T0), None, None, {})  # type: ignore[arg-type]
    controller = p.open()
    spool = tmp_path / "spool"
    spool.mkdir()

    async def fax(name: str, uid: str, caller: str) -> None:
        (spool / spool_name(uid)).write_bytes(fax_tiff((letter(STANDARD, len(uid)),)))
        assert await controller.faxes.fax_ended(FaxEnd(uid, caller, FAX, FaxStatus.SUCCESS, 1))
        p.keys[name] = f"fax:{uid}"

    async def voicemail(name: str, n: int) -> None:
        msg_id = f"{int(p.clock().timestamp())}-0000000{n}"
        spool_message(spool, n, msg_id, p.clock(), PATIENT)
        await controller.voicemail.take_spool()
        p.keys[name] = f"voicemail:{msg_id}"

    try:
        controller.state = ModeState(Mode.OUTAGE, None)
        await fax("A", "1772463600.1", PATIENT)
        await fax("C", "1772463600.2", REFUSED)
        controller.state = ModeState(Mode.NORMAL, None)
        await fax("G", "1772463600.3", PATIENT)
        await voicemail("B", 0)
        drain = controller.inbox
        assert drain is not None
        drain.start()
        await drain.drained(within=30)  # A and B accepted at T0, C refused
        inbox.fail_rate = 1.0
        p.clock.advance(3600)
        tried = inbox.requests
        await voicemail("I", 1)  # the drain is woken: one try, whose answer never comes
        await inbox.wait_for_requests(tried + 1, within=30)
        await drain.close()
        await voicemail("H", 2)
        states = {n: p.journal.attempt(k) for n, k in p.keys.items()}
        assert {n: a.delivery for n, a in states.items() if a is not None} == {
            "A": Delivery.DELIVERED, "B": Delivery.DELIVERED, "C": Delivery.FAILED,
            "G": Delivery.NOT_NEEDED, "I": Delivery.HELD, "H": Delivery.HELD}
        p.clock.now = T0 + timedelta(days=DAYS)
        yield p
    finally:
        await p.controller.close()
        p.journal.close()
        await inbox.stop()


async def test_only_files_the_inbox_accepted_long_ago_go_and_each_once(
        practice: Practice) -> None:
    p = practice
    fax_dir, store, spool = p.tmp / "fax", p.tmp / "voicemail", p.tmp / "spool"
    before = files(fax_dir, store, spool)
    kept = {n: p.journal.attempt(k) for n, k in p.keys.items()}
    assert all(a is not None and Path(a.file) in before for a in kept.values())
    retention = p.controller.feature(RetentionFeature)
    assert retention is not None
    assert await retention.service.round() == 0  # accepted exactly DAYS ago: not yet
    assert files(fax_dir, store, spool) == before and p.audited() == []

    p.clock.advance(60)
    await p.restart()  # the background round, after the PBX's record is imported
    gone = {Path(kept["A"].file), Path(kept["B"].file)}  # type: ignore[union-attr]
    gone |= {q for q in before if q.parent.name == "INBOX" and q.stem == "msg0000"}
    assert len(gone) == 4
    after = files(fax_dir, store, spool)
    assert after == {q: b for q, b in before.items() if q not in gone}  # the rest byte for byte
    details = p.audited()
    assert len(details) == 2 and all("30 days after the inbox accepted it" in d
                                     for d in details), details
    assert any("msg0000.wav, msg0000.txt" in d for d in details), details
    assert not any(PATIENT[2:] in d for d in details)  # no caller, in any spelling
    for name, key in p.keys.items():
        a = p.journal.attempt(key)
        assert a is not None and a.file == kept[name].file  # type: ignore[union-attr]
        assert (a.pruned is not None) is (name in "AB")
        assert a.delivery == kept[name].delivery  # type: ignore[union-attr]
        assert a.pruned is None or (a.pruned.days, a.pruned.at) == (DAYS, p.clock())

    # Again, and after another restart: nothing more goes and nothing is audited twice.
    retention = p.controller.feature(RetentionFeature)
    assert retention is not None and await retention.service.round() == 0
    p.clock.advance(DAYS * 86400)
    await p.restart()
    assert files(fax_dir, store, spool) == after and len(p.audited()) == 2


async def test_a_removal_cut_short_by_a_crash_is_finished_and_audited_once(
        practice: Practice) -> None:
    # A round removed A's PDF and B's spool message and recording, then the process died
    # before the journal was marked: the next controller marks and audits each once.
    p = practice
    a, b = (p.journal.attempt(p.keys[n]) for n in "AB")
    assert a is not None and b is not None
    for path in (Path(a.file), Path(b.file), *(p.tmp / "spool").rglob("msg0000.*")):
        await asyncio.to_thread(path.unlink)
    p.clock.advance(60)
    await p.restart()
    details = p.audited()
    assert len(details) == 2 and all("removed from Backline's store: none left" in d
                                      for d in details), details
    assert all(p.journal.attempt(p.keys[n]).pruned is not None  # type: ignore[union-attr]
               for n in "AB")
    await p.restart()
    assert len(p.audited()) == 2


async def test_a_clock_stepped_ahead_removes_nothing_before_n_days_have_passed(
        practice: Practice) -> None:
    # The date is set a week ahead while the controller runs (typed in wrong, a bad time
    # source) a day before A and B fall due: they stay; once that day has passed by both
    # clocks, they go.
    p = practice
    fax_dir, store, spool = p.tmp / "fax", p.tmp / "voicemail", p.tmp / "spool"
    p.clock.now = T0 + timedelta(days=DAYS - 1)
    await p.restart()  # its first round: nothing due
    before = files(fax_dir, store, spool)
    feature = p.controller.feature(RetentionFeature)
    assert feature is not None
    retention = feature.service
    start = retention.monotonic()
    p.clock.advance(7 * 86400)
    assert await retention.round() == 0
    assert files(fax_dir, store, spool) == before and p.audited() == []
    retention.monotonic = lambda: start + 86400 + 60
    p.clock.advance(86400 + 60)
    assert await retention.round() == 2
    assert len(p.audited()) == 2


async def on_status(p: Practice, check: str) -> tuple[dict[str, object], str]:
    """The status page's health ``check`` as /status.json gives it, and the page itself."""
    async with TestClient(TestServer(p.controller.status_app())) as http:
        doc = await (await http.get("/status.json")).json()
        page = await (await http.get("/status")).text()
    return dict(doc["health"][check]), page


async def test_a_clock_stepped_ahead_is_on_the_status_page_and_json_until_the_restart(
        practice: Practice) -> None:
    # The step the log says is on the status page and /status.json too (health "clock"):
    # failing while the clock is ahead, kept as the last error once it is back in step, gone
    # after a restart.  Durations and times only: no patient data.
    p = practice
    await p.restart()
    feature = p.controller.feature(RetentionFeature)
    assert feature is not None
    retention = feature.service

    clock, _ = await on_status(p, "clock")
    assert clock["verdict"] == "ok" and clock["last_error"] is None, clock
    start = retention.monotonic()
    # A week and half an hour on the date, a minute on the monotonic clock (from the first
    # round's reading, some moments before ``start``).
    p.clock.advance(7 * 86400 + 1800)
    retention.monotonic = lambda: start + 60
    await retention.round()
    clock, page = await on_status(p, "clock")
    assert clock["verdict"] == "failing", clock
    assert clock["says"] == "stepped ahead: retention counts only the time that passed"
    assert re.fullmatch(r"7 d 0 h 2\d min ahead of the time that passed since the controller "
                        "started", str(clock["last_error"])), clock
    assert clock["last_error_at"] == p.clock().isoformat()
    assert "<td>Clock</td>" in page and f"{clock['last_error']}</td>" in page
    assert not [s for s in spellings(PATIENT) if s in page + json.dumps(clock)]
    # Set right again: in step, the step still shown until the restart.
    p.clock.now -= timedelta(days=7, minutes=30)
    await retention.round()
    clock, _ = await on_status(p, "clock")
    assert clock["verdict"] == "ok" and str(clock["last_error"]).startswith("7 d"), clock
    await p.restart()
    clock, _ = await on_status(p, "clock")
    assert clock["verdict"] == "ok" and clock["last_error"] is None, clock


async def test_files_removed_before_the_journal_failed_are_named_in_their_audit(
        practice: Practice) -> None:
    # The journal refuses the round's first mark (A's), after B's spool message went with
    # the round's spool pass: once it takes them, each audit entry names what went.
    p = practice
    a, b = (p.journal.attempt(p.keys[n]) for n in "AB")
    assert a is not None and b is not None
    await p.restart()  # nothing due yet; the database is the journal's own file
    db = sqlite3.connect(p.tmp / "journal.db")
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE OF pruned_at ON attempts "
               "BEGIN SELECT RAISE(ABORT, 'the test refuses the mark'); END")
    db.commit()
    feature = p.controller.feature(RetentionFeature)
    assert feature is not None
    p.clock.advance(60)
    with pytest.raises(JournalError):
        await feature.service.round()
    assert not await asyncio.to_thread(Path(a.file).exists)
    assert not list(await asyncio.to_thread(lambda: list((p.tmp / "spool").rglob("msg0000.*"))))
    assert p.audited() == []
    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    assert await feature.service.round() == 2
    details = p.audited()
    assert any(f"removed from Backline's store: {Path(a.file).name}" in d for d in details), \
        details
    assert any("from the PBX's spool: msg0000.wav, msg0000.txt" in d for d in details), details


async def test_a_spool_that_cannot_be_pruned_keeps_its_messages_and_says_so(
        practice: Practice) -> None:
    # The controller may not remove Asterisk's files (immutable here, as another user's
    # spool would be): the message stays whole in both places, the status page's line says
    # why, and the fax goes; once the spool can be pruned, the message goes too.
    p = practice
    spool = p.tmp / "spool"
    [audio] = spool.rglob("msg0000.wav")
    b = p.journal.attempt(p.keys["B"])
    assert b is not None
    kept = files(spool) | files(Path(b.file))
    await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(audio)], check=True)
    try:
        p.clock.advance(60)
        await p.restart()
        health = p.controller.health["retention"]
        assert health.verdict.value == "failing" and "Operation not permitted" in \
            health.last_error, health
        assert files(spool) | files(Path(b.file)) == kept
        assert [p.journal.attempt(p.keys[n]).pruned is not None  # type: ignore[union-attr]
                for n in "AB"] == [True, False]
    finally:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(audio)], check=True)
    retention = p.controller.feature(RetentionFeature)
    assert retention is not None and await retention.service.round() == 1
    assert not await asyncio.to_thread(audio.exists)
    assert not await asyncio.to_thread(Path(b.file).exists)


def box_inbox(p: Practice) -> Path:
    """BOX's INBOX in the practice's voicemail spool (where B's message is)."""
    return p.tmp / "spool" / "voicemail" / "backline" / BOX / "INBOX"


def held_as_app_voicemail(folder: Path, own: str) -> Path:
    """``folder``'s lock taken as app_voicemail takes it (Asterisk's ast_lock_path): its own
    empty file ``own``, linked as ``.lock``, then unlinked; the lock."""
    mine, lock = folder / own, folder / ".lock"
    mine.write_bytes(b"")
    os.link(mine, lock)
    mine.unlink()
    return lock


async def pruned_and_unlocked(p: Practice, inbox: Path) -> None:
    """B's message removed from ``inbox`` and marked pruned, and no lock of the folder left
    behind to block app_voicemail."""
    assert not await asyncio.to_thread(lambda: [q.name for q in inbox.glob(".lock*")])
    assert not await asyncio.to_thread(lambda: [q.name for q in inbox.glob("msg0000.*")])
    assert p.journal.attempt(p.keys["B"]).pruned is not None  # type: ignore[union-attr]


async def test_a_message_in_a_folder_app_voicemail_holds_locked_stays_until_the_next_pass(
        practice: Practice) -> None:
    # app_voicemail locks a folder (its `.lock` file, Asterisk's ast_lock_path) while it
    # files, moves or renumbers its messages: a pass that finds it held leaves that folder's
    # message whole, in the spool and Backline's store, says why, and the next pass removes it.
    p = practice
    inbox = box_inbox(p)
    b = p.journal.attempt(p.keys["B"])
    assert b is not None
    held_as_app_voicemail(inbox, ".lock-0123abcd")
    kept = files(inbox) | files(Path(b.file))  # the lock among them: app_voicemail's
    p.clock.advance(60)
    await p.restart()
    health = p.controller.health["retention"]
    assert health.verdict.value == "failing" and health.last_error.startswith(
        f"app_voicemail held the lock of {BOX}/INBOX"), health
    assert files(inbox) | files(Path(b.file)) == kept
    assert [p.journal.attempt(p.keys[n]).pruned is not None  # type: ignore[union-attr]
            for n in "AB"] == [True, False]

    (inbox / ".lock").unlink()  # app_voicemail is done with the folder
    retention = p.controller.feature(RetentionFeature)
    assert retention is not None and await retention.service.round() == 1
    assert not await asyncio.to_thread(Path(b.file).exists)
    # The lock was taken and given back: nothing of it is left to block app_voicemail.
    await pruned_and_unlocked(p, inbox)


async def test_a_lock_left_by_a_backline_process_that_died_holding_it_is_removed_at_the_next_pass(
        practice: Practice) -> None:
    # A controller killed while it held a folder's lock would leave app_voicemail unable to
    # file a message there ever again (it drops each after 5 s): the next pass knows the lock
    # for a Backline process's that no longer runs, removes it, and prunes the folder.
    p = practice
    inbox = box_inbox(p)
    await left_by_a_dead_controller(inbox)
    p.clock.advance(60)
    await p.restart()
    health = p.controller.health["retention"]
    assert health.verdict.value == "ok", health
    await pruned_and_unlocked(p, inbox)


async def left_by_a_dead_controller(folder: Path) -> Path:
    """``folder``'s lock as a Backline process killed while holding it leaves it (its pid and
    start, a process that has ended); the lock."""
    ended = await asyncio.to_thread(subprocess.Popen, ["sleep", "60"])
    try:
        born = started(ended.pid)
    finally:
        ended.kill()
        await asyncio.to_thread(ended.wait)
    assert born
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    (folder / ".lock").write_text(f"backline {ended.pid} {born}\n")
    return folder / ".lock"


async def test_a_dead_controllers_lock_is_removed_at_the_next_round_with_nothing_due(
        practice: Practice) -> None:
    # A controller killed mid-prune leaves its lock; app_voicemail drops every message to
    # that folder until it goes.  The next round removes it whatever is due (nothing here),
    # in a folder with messages and in an empty one; app_voicemail's own (empty) is kept.
    p = practice
    inbox = box_inbox(p)
    dead = [await left_by_a_dead_controller(inbox),
            await left_by_a_dead_controller(inbox.parent / "Old")]
    await asyncio.to_thread((inbox.parent / "Work").mkdir)
    theirs = held_as_app_voicemail(inbox.parent / "Work", ".lock-0123abcd")
    retention = p.controller.feature(RetentionFeature)
    assert retention is not None
    assert await retention.service.round() == 0  # nothing due: every message kept
    assert not [lock for lock in dead if lock.exists()]
    assert theirs.exists()
    assert retention.service.problem == ""
    assert len(list(inbox.glob("msg*.txt"))) == 3


async def test_a_dead_controllers_lock_is_removed_at_the_start_with_retention_off(
        practice: Practice) -> None:
    # Retention turned off after the controller that held the lock was killed: no round
    # ever runs, and the next start removes it (at its PBX login, the spool's place known).
    p = practice
    lock = await left_by_a_dead_controller(box_inbox(p))
    p.path.write_text(p.path.read_text().replace(f", delivered_days: {DAYS}", ""))
    await p.controller.close()
    p.journal.close()
    controller = p.open()
    await controller.start()
    assert controller.feature(RetentionFeature) is None
    assert p.controller.health["retention"].verdict.value == "off"
    await controller.import_pbx_record()
    assert not lock.exists()
    assert len(list(box_inbox(p).glob("msg*.txt"))) == 3


async def test_a_dead_controllers_lock_that_cannot_be_removed_keeps_no_message_out(
        practice: Practice) -> None:
    # The lock's folder cannot be written (made immutable here; a spool folder another user
    # owns on a server): the lock stays, said in the log, and the message left in the box
    # meanwhile is still taken at the login.  It used to end the spool's whole import.
    p = practice
    old = box_inbox(p).parent / "Old"
    lock = await left_by_a_dead_controller(old)
    msg_id = f"{int(p.clock().timestamp())}-00000009"
    spool_message(p.tmp / "spool", 9, msg_id, p.clock(), PATIENT)
    await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(old)], check=True)
    try:
        await p.controller.import_pbx_record()
    finally:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(old)], check=True)
    assert lock.exists()
    assert f"voicemail:{msg_id}" in {a.key for a in p.controller.journal.attempts(limit=100)}


def test_a_lock_a_gone_backline_process_left_is_said_to_be_backlines_and_removable_now() -> None:
    lock = HeldLock("1", "INBOX", Path("/spool/voicemail/backline/1/INBOX/.lock"), 7200.0,
                    "backline 4242 99", True)
    fix = lock_fix([lock])
    assert fix == ("Backline's, left by a Backline process that is gone: Backline removes it "
                   "at its next retention round or controller start (PBX login), or remove it "
                   "now: rm /spool/voicemail/backline/1/INBOX/.lock"), fix
    assert "once Asterisk is stopped" not in lock_fix([lock], 60.0)


async def test_a_voicemail_folder_lock_held_past_a_minute_is_on_the_status_page_and_kept(
        practice: Practice) -> None:
    # app_voicemail's own lock (empty, as ast_lock_path makes it) left held: it drops every
    # message left in that folder after 5 s.  Past a minute (HELD_TOO_LONG; the lock's age
    # from its file time) the status page and /status.json fail naming the box and its
    # number (no caller) and the fix; retention, on here, never removes it; removed, ok.
    p = practice
    lock = held_as_app_voicemail(box_inbox(p), ".lock-89abcdef")
    made = lock.stat().st_mtime

    def locks(held: float) -> dict[str, object]:
        health = p.controller.pbx_record.folder_locks(now=lambda: made + held)
        return {"verdict": health["voicemail_locks"].verdict.value,
                "says": health["voicemail_locks"].says}

    assert locks(59)["verdict"] == "ok"  # a holder at work (app_voicemail's take seconds)
    late = locks(61)
    assert late["verdict"] == "failing" and str(late["says"]).startswith(
        f"box {BOX}'s INBOX ({VOICE}) locked 1 min ago by app_voicemail"), late
    assert f"rm {lock}" in str(late["says"]) and PATIENT not in str(late["says"])

    os.utime(lock, (made - 3600, made - 3600))  # an hour before it was made: left held
    await p.restart()  # retention's pass: app_voicemail's lock is not Backline's to remove
    assert lock.exists()

    held, page = await on_status(p, "voicemail_locks")
    assert held["verdict"] == "failing" and f"box {BOX}&#x27;s INBOX ({VOICE})" in page, held
    assert str(held["says"]).startswith(f"box {BOX}'s INBOX ({VOICE}) locked 1 h ") and \
        "app_voicemail drops every message left there after 5 s" in str(held["says"]), held
    assert PATIENT not in json.dumps(held) + page
    lock.unlink()  # Asterisk stopped, the lock removed as the fix says
    held, _ = await on_status(p, "voicemail_locks")
    assert held["verdict"] == "ok", held


def test_a_lock_made_before_the_running_asterisk_started_is_said_removable_now() -> None:
    # doctor asks Asterisk its uptime: a lock older than it (by more than the 5 s a lock's
    # file may precede its taking and the 2 s clocks may differ) is none of its processes';
    # one made since may be its, and waits for Asterisk to stop.
    def held(seconds: float, box: str) -> HeldLock:
        return HeldLock(box, "INBOX", Path(f"/spool/voicemail/backline/{box}/INBOX/.lock"),
                        seconds, "", False)

    up = 3600.0
    fix = lock_fix([held(up + 11, "1"), held(up + 9, "2")], up)
    assert fix == ("made before the Asterisk running now started (1 h 0 min ago), so none of "
                   "its app_voicemail holds it: remove it now: rm "
                   "/spool/voicemail/backline/1/INBOX/.lock; once Asterisk is stopped, or its "
                   "holder is otherwise gone (no app_voicemail takes a folder's lock for more "
                   "than seconds), remove it: rm /spool/voicemail/backline/2/INBOX/.lock"), fix
    assert lock_fix([held(up + 11, "1")], None).startswith("once Asterisk is stopped")


async def test_a_pruned_message_still_in_a_spool_is_not_taken_in_again(
        practice: Practice) -> None:
    p = practice
    p.clock.advance(60)
    await p.restart()
    b = p.journal.attempt(p.keys["B"])
    assert b is not None and b.pruned is not None
    assert not await asyncio.to_thread(Path(b.file).exists)
    # The spool holds it again (restored from a backup, say): it is read, never journaled
    # or kept again.
    spool_message(p.tmp / "spool", 0, p.keys["B"].removeprefix("voicemail:"), b.at, PATIENT)
    count = len(p.journal.attempts(limit=1000))
    seen = await p.controller.voicemail.take_spool()
    await p.controller.import_pbx_record()
    assert p.keys["B"].removeprefix("voicemail:") in {m.msg_id for m in seen}
    assert len(p.journal.attempts(limit=1000)) == count
    assert not await asyncio.to_thread(Path(b.file).exists)
    assert p.journal.attempt(p.keys["B"]) == b


async def test_a_pruned_items_link_pages_and_attempts_say_removed_after_n_days(
        practice: Practice) -> None:
    p = practice
    p.clock.advance(60)
    await p.restart()
    now, j = p.clock(), p.journal
    a, b, c, h = (j.attempt(p.keys[n]) for n in "ABCH")
    assert a and b and c and h
    # A voicemail email's link to a pruned message, and to one still kept.
    email_ids = []
    for message in (b, h):
        j.owe_voicemail_emails(message.id, [("ana", "ana@maple.example")], now)
        email_ids.append(j.voicemail_emails()[-1].id)
    tokens = [links.new_token() for _ in email_ids]
    for token, email_id, message in zip(tokens, email_ids, (b, h), strict=True):
        j.add_voicemail_link(email_id, message.id, links.token_hash(token), now,
                             links.expiry(now, 12))
    app = make_voicemail_app(j, "Maple Street Family Medicine", "America/Chicago", p.clock)
    async with TestClient(TestServer(app)) as http:
        page = await http.get(f"/{tokens[0]}")
        text = await page.text()
        assert page.status == 200 and "removed after 30 days (the inbox has it)" in text
        assert "<audio" not in text and PATIENT in text
        audio = await http.get(f"/{tokens[0]}/audio")
        assert audio.status == 410 and "removed after 30 days" in await audio.text()
        kept = await http.get(f"/{tokens[1]}")
        assert kept.status == 200 and "<audio" in await kept.text()
    # An alert's link listing the pruned fax A and the refused fax C.
    j.gather([a.id, c.id], now,
             lambda slot, at: JoinAlert(slot.id) if slot is not None else OpenAlert(at, 60),
             [(AlertChannel.EMAIL, "ops@maple.example")], lambda: "<m@maple.example>")
    [delivery] = j.alert_deliveries()
    token = links.new_token()
    j.add_alert_link(delivery.id, links.token_hash(token), now, links.expiry(now, 12))
    app = make_link_app(j, "Maple Street Family Medicine", "America/Chicago", p.clock)
    async with TestClient(TestServer(app)) as http:
        text = await (await http.get(f"/{token}")).text()
        assert text.count("removed after 30 days") == 1 and f"fax/{c.id}" in text
        pruned = await http.get(f"/{token}/fax/{a.id}")
        assert pruned.status == 410 and "removed after 30 days" in await pruned.text()
        assert await (await http.get(f"/{token}/fax/{c.id}")).read() == \
            await asyncio.to_thread(Path(c.file).read_bytes)
    actions = [e.action for e in j.audit_log(100)]
    assert "link.download.removed" in actions and "voicemail.listen.removed" in actions
    # `backline attempts`: the record stays, and says its file went.
    listed = await asyncio.to_thread(backline, "attempts", "--config", str(p.path))
    lines = [line for line in listed.stdout.splitlines() if "removed after 30 days" in line]
    assert len(lines) == 2 and all("delivered" in line for line in lines), listed.stdout
    as_json = await asyncio.to_thread(backline, "attempts", "--json", "--config", str(p.path))
    rows = json.loads(as_json.stdout)
    removed = {r["key"]: r["file_removed"] for r in rows}
    assert removed[a.key] == {"at": now.isoformat(), "after_days": DAYS}
    assert removed[c.key] is None and removed[h.key] is None


def test_check_and_the_start_say_what_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    for days, said in (("", "retention: off: every fax and voicemail recording is kept"),
                       (", delivered_days: 7", "are removed 7 days after the inbox accepted")):
        path.write_text(YAML.format(voice=VOICE, fax=FAX, ami=1, tmp=tmp_path, days=days,
                                    inbox="http://127.0.0.1:1/inbox", token_env=TOKEN_ENV))
        found = backline("check", str(path))
        assert found.returncode == 0 and said in found.stdout, found


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """Where small disks of their own are mounted (:func:`disk`), unmounted afterwards."""
    try:
        yield tmp_path
    finally:
        for where in tmp_path.iterdir():
            if where.is_mount():
                subprocess.run(["umount", "-l", str(where)], check=True)


def disk(root: Path, name: str, size: str) -> Path:
    where = root / name
    where.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(where)], check=True)
    return where


def test_doctor_warns_of_a_filling_fax_and_voicemail_disk_and_fails_a_full_one(
        tmpfs: Path) -> None:
    def verdict(where: Path) -> str:
        path = tmpfs / f"{where.name}.yaml"
        path.write_text(YAML.format(voice=VOICE, fax=FAX, ami=free_port(), tmp=where,
                                    days="", inbox="http://127.0.0.1:1/inbox",
                                    token_env=TOKEN_ENV))
        found = subprocess.run([sys.executable, "-m", "backline.app.cli", "doctor", str(path),
                                "--json"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60, env={**os.environ, TOKEN_ENV: TOKEN})
        [line] = [r for r in json.loads(found.stdout) if r["check"] == "fax and voicemail disk"]
        return f"{line['verdict']}: {line['seen']}; fix: {line['fix']}"

    roomy, small = disk(tmpfs, "roomy", "2g"), disk(tmpfs, "small", "96m")
    assert verdict(roomy).startswith("ok: 2048 MB free on")
    warned = verdict(small)
    assert warned.startswith("warn: 96 MB free on") and "warned below 1024 MB" in warned
    assert "set connections.storage.delivered_days" in warned
    fill_to(small, 32 << 20, "filler")
    assert verdict(small).startswith("FAIL: ") and "faxes are refused" in verdict(small)

