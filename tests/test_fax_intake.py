"""Fax intake without Asterisk: the pure part table by table, then the shell (spool to fax
directory to verified PDF to journal) on real files and a real SQLite journal."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telephony import config
from telephony.asterisk.cdr import CdrRow
from telephony.asterisk.fax import (
    REJECT_CONTEXT,
    FaxIntake,
    probe_storage,
    spool_name,
)
from telephony.fax_intake import (
    BadFaxReport,
    Converted,
    FaxEnd,
    FaxStatus,
    NothingReceived,
    NotStored,
    StorageCheck,
    Unreadable,
    fax_attempt,
    fax_end_from_args,
    fax_key,
    rejected_by_pbx,
    storage_verdict,
    stored_names,
)
from telephony.journal import Delivery, Journal, NewAttempt, Outcome, open_journal
from telephony.model import AsteriskPbx, Carry
from telephony.outage import Mode
from telephony.ownership import OwnershipBook
from telephony.routing import (
    CallKind,
    FaxRefusal,
    InboundCall,
    ReceiveFax,
    Registrations,
    RejectFax,
    route_inbound,
)
from tests.fax_samples import FINE, STANDARD, fax_tiff, letter
from tests.practice import directory, number, user

FAX, BOTH, VOICE = "+13125550109", "+13125550108", "+13125550100"
UID = "1712345678.42"
AT = datetime(2025, 3, 4, 15, 30, tzinfo=UTC)

# -- routing with the storage as an input ---------------------------------------------------


def book() -> OwnershipBook:
    return OwnershipBook(directory([user("ana")], [], [
        number(FAX, carries=(Carry.FAX,)), number(BOTH, carries=(Carry.VOICE, Carry.FAX)),
        number(VOICE)]))


@pytest.mark.parametrize(("dialed", "kind", "storage", "expected"), [
    (FAX, CallKind.VOICE, True, ReceiveFax(FAX)),
    (FAX, CallKind.VOICE, False, RejectFax(FAX, FaxRefusal.NO_STORAGE)),
    (BOTH, CallKind.FAX, False, RejectFax(BOTH, FaxRefusal.NO_STORAGE)),
    (BOTH, CallKind.FAX, True, ReceiveFax(BOTH)),
    (VOICE, CallKind.FAX, True, RejectFax(VOICE, FaxRefusal.NOT_A_FAX_NUMBER)),
    (VOICE, CallKind.FAX, False, RejectFax(VOICE, FaxRefusal.NOT_A_FAX_NUMBER)),
])
def test_fax_routing_with_storage(dialed: str, kind: CallKind, storage: bool,
                                  expected: object) -> None:
    b = book()
    for mode in Mode:
        assert route_inbound(b, Registrations(b, 3), InboundCall(dialed, "x", kind), mode, 25,
                             fax_storage=storage) == expected


def test_storage_is_not_asked_about_a_voice_call() -> None:
    b = book()
    decision = route_inbound(b, Registrations(b, 3), InboundCall(BOTH, "x"), Mode.NORMAL, 25,
                             fax_storage=False)
    assert not isinstance(decision, RejectFax)


# -- the PBX's report -------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["+13125550109", "SUCCESS", "3", "", "%2B1%20720%20555%200199"],
     FaxEnd(UID, "carrier", FAX, FaxStatus.SUCCESS, 3, "+1 720 555 0199", "")),
    (["+13125550109", "FAILED", "1", "The%20call%20dropped%20prematurely", ""],
     FaxEnd(UID, "carrier", FAX, FaxStatus.FAILED, 1, "", "The call dropped prematurely")),
    ([], FaxEnd(UID, "carrier", "")),  # ReceiveFax never ran: nothing reported
    (["+1312;rm -rf", "MAYBE", "3 pages", "", ""], FaxEnd(UID, "carrier", "+1312")),
    # A station ID is the sender's choice: no control characters, no bidi tricks, 20 at most.
    (["", "", "", "", "Dr%0AEvil%E2%80%AEgnp%2C%22%3B%20and%20much%20more%20text"],
     FaxEnd(UID, "carrier", "", station_id='Dr Evil gnp,"; and m')),
    (["", "", "", "%FF%FE" * 100, ""], FaxEnd(UID, "carrier", "", error="\ufffd" * 80)),
])
def test_the_fax_report_is_checked(args: list[str], expected: FaxEnd) -> None:
    assert fax_end_from_args(UID, "carrier", args) == expected


@pytest.mark.parametrize("uniqueid", ["", "../../etc/passwd", "1.2/../x", "1712345678",
                                      "1712345678.42 ", "a b-1.2", "1." + "9" * 20])
def test_a_report_for_a_call_id_asterisk_would_not_make_is_refused(uniqueid: str) -> None:
    with pytest.raises(BadFaxReport):
        fax_end_from_args(uniqueid, "carrier", [])
    with pytest.raises(BadFaxReport):
        spool_name(uniqueid)


def test_names_come_from_the_call_id() -> None:
    assert fax_key("pbx-2-1712345678.42") == "fax:pbx-2-1712345678.42"  # with a systemname
    assert spool_name(UID) == f"fax-{UID}.tif"
    assert stored_names(UID) == (f"fax-{UID}.tif", f"fax-{UID}.pdf")


@pytest.mark.parametrize(("free", "problem", "expected"), [
    (10**9, None, StorageCheck(True)),
    (64 * 2**20, None, StorageCheck(True)),
    (64 * 2**20 - 1, None, StorageCheck(False, "full: 63 MiB free, 64 MiB needed")),
    (None, None, StorageCheck(False, "full: unknown free, 64 MiB needed")),
    (10**9, "/x: Read-only file system", StorageCheck(False, "not writable: /x: Read-only "
                                                      "file system")),
])
def test_storage_verdict(free: int | None, problem: str | None,
                         expected: StorageCheck) -> None:
    assert storage_verdict(free, problem) == expected


# -- the journal record ---------------------------------------------------------------------

END = FaxEnd(UID, "+17205550141", "3125550109", FaxStatus.SUCCESS, 3, "ACME 1")


@pytest.mark.parametrize(("end", "stored", "mode", "outcome", "file", "detail"), [
    (END, Converted("/f/a.pdf", 3), Mode.NORMAL, Outcome.RECEIVED, "/f/a.pdf",
     "3 pages; station ACME 1"),
    (END, Converted("/f/a.pdf", 2, ("page 2: vertical resolution missing, assumed 98 lpi",)),
     Mode.OUTAGE, Outcome.RECEIVED, "/f/a.pdf",
     "2 pages; the PBX counted 3; page 2: vertical resolution missing, assumed 98 lpi; "
     "station ACME 1"),
    (FaxEnd(UID, "x", FAX, FaxStatus.FAILED, 1, "", "HANGUP"), Converted("/f/a.pdf", 1),
     Mode.NORMAL, Outcome.RECEIVED, "/f/a.pdf", "1 page; the transmission failed (HANGUP)"),
    (END, Unreadable("/f/a.tif", "page 1: width 1000 px is not a fax scan-line width"),
     Mode.NORMAL, Outcome.UNREADABLE, "/f/a.tif",
     "no PDF: page 1: width 1000 px is not a fax scan-line width; the TIFF is kept as "
     "received; station ACME 1"),
    (FaxEnd(UID, "x", FAX), NotStored("/spool/fax-1.tif", "No space left on device"),
     Mode.NORMAL, Outcome.UNREADABLE, "/spool/fax-1.tif",
     "not moved into the fax directory (No space left on device); left where the PBX "
     "wrote it"),
    (FaxEnd(UID, "x", FAX, FaxStatus.FAILED, 0), NothingReceived(), Mode.OUTAGE,
     Outcome.UNREADABLE, "", "no page received; the transmission failed (no reason given)"),
])
def test_the_fax_attempt(end: FaxEnd, stored: Converted | Unreadable | NotStored |
                         NothingReceived, mode: Mode, outcome: Outcome, file: str,
                         detail: str) -> None:
    a = fax_attempt(end, stored, at=AT, mode=mode)
    assert (a.key, a.outcome, a.file, a.detail, a.recipient, a.mode) == (
        f"fax:{UID}", outcome, file, detail, "+13125550109" if end.dialed else "", mode)
    assert a.delivery is (Delivery.HELD if mode is Mode.OUTAGE else Delivery.NOT_NEEDED)


def test_a_fax_the_pbx_took_alone_says_so_and_one_it_refused_alone_is_rejected() -> None:
    a = fax_attempt(FaxEnd(UID, "x", FAX), Converted("/f/a.pdf", 1), at=AT, mode=Mode.NORMAL,
                    by_pbx_alone=True)
    assert a.detail == "1 page; received by the PBX while the controller was away"
    r = rejected_by_pbx(UID, "x", VOICE, at=AT, mode=Mode.OUTAGE)
    assert (r.key, r.outcome, r.delivery) == (f"fax:{UID}", Outcome.REJECTED, Delivery.HELD)


# -- the shell on real files ----------------------------------------------------------------


class Desk:
    """A FaxIntake over a real SQLite journal, its spool and fax directory in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.journal: Journal = open_journal(f"sqlite://{tmp / 'journal.db'}")
        self.spool = tmp / "spool"
        self.spool.mkdir()
        self.store = tmp / "fax"
        self.intake = FaxIntake(self.store, "America/Chicago", self.record, self.journal.attempt,
                                lambda: Mode.NORMAL, spool=self.spool, clock=lambda: AT,
                                correct=self.journal.correct_fax)

    async def record(self, attempt: NewAttempt) -> bool:
        return self.journal.record_attempt(attempt)[1]

    def spooled(self, data: bytes, uniqueid: str = UID) -> Path:
        path = self.spool / spool_name(uniqueid)
        path.write_bytes(data)
        return path


def test_a_received_fax_is_stored_converted_verified_and_journaled_once(
        tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    spooled = desk.spooled(fax_tiff((letter(STANDARD, 1), letter(FINE, 2))))
    end = FaxEnd(UID, "+17205550141", FAX, FaxStatus.SUCCESS, 2, "ACME")
    assert asyncio.run(desk.intake.fax_ended(end)) is True
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.RECEIVED and a.detail == "2 pages; station ACME"
    assert a.file == str(desk.store / f"fax-{UID}.pdf")
    assert Path(a.file).read_bytes().startswith(b"%PDF-")
    assert (Path(a.file).stat().st_mode & 0o777) == 0o600  # patient data
    assert not spooled.exists() and list(desk.store.glob("*.tif")) == []
    assert list(desk.store.glob("*.part")) == []
    # Told again (the CDR import after a restart): nothing new, nothing redone.
    assert asyncio.run(desk.intake.fax_ended(end)) is False
    assert len(desk.journal.attempts()) == 1


def test_an_unreadable_tiff_is_kept_and_journaled_as_such(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.spooled(b"II*\x00 not really a fax")
    assert asyncio.run(desk.intake.fax_ended(FaxEnd(UID, "x", FAX, FaxStatus.SUCCESS, 1)))
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.UNREADABLE and a.file.endswith(".tif")
    assert Path(a.file).read_bytes() == b"II*\x00 not really a fax"  # nothing lost
    assert list(desk.store.glob("*.pdf")) == []


def test_a_fax_that_ended_before_a_page_is_journaled_with_nothing_stored(
        tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    end = fax_end_from_args(UID, "x", [FAX, "FAILED", "0", "HANGUP", ""])
    assert asyncio.run(desk.intake.fax_ended(end))
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and (a.outcome, a.file) == (Outcome.UNREADABLE, "")


def test_a_crash_after_the_move_is_finished_by_the_next_report(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    tiff_name, _ = stored_names(UID)
    desk.store.mkdir()
    (desk.store / tiff_name).write_bytes(fax_tiff((letter(STANDARD, 3),)))  # moved, not journaled
    row = CdrRow("x", FAX, "backline-fax", "ReceiveFAX", AT, UID)
    assert asyncio.run(desk.intake.import_row(row, Mode.OUTAGE)) is True
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and (a.outcome, a.mode, a.delivery) == (
        Outcome.RECEIVED, Mode.OUTAGE, Delivery.HELD)
    assert "controller was away" in a.detail
    assert not (desk.store / tiff_name).exists()


def test_a_fax_the_pbx_refused_alone_is_imported_as_rejected(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    row = CdrRow("x", VOICE, REJECT_CONTEXT, "Hangup", AT, UID)
    assert asyncio.run(desk.intake.import_row(row, Mode.NORMAL)) is True
    assert asyncio.run(desk.intake.import_row(row, Mode.NORMAL)) is False
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.REJECTED
    bad = CdrRow("x", VOICE, REJECT_CONTEXT, "Hangup", AT, "../1.2")
    assert asyncio.run(desk.intake.import_row(bad, Mode.NORMAL)) is False


def test_probe_storage(tmp_path: Path) -> None:
    assert probe_storage(tmp_path / "new" / "fax", 1) == StorageCheck(True)
    assert (tmp_path / "new" / "fax").is_dir() and list((tmp_path / "new" / "fax").iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert probe_storage(tmp_path / "file", 1) == StorageCheck(
        False, f"not writable: {tmp_path / 'file'}: not a directory")
    assert probe_storage(tmp_path / "file" / "fax", 1).ok is False
    assert probe_storage(tmp_path, 1 << 62).reason.startswith("full: ")


# -- the config key -------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"
PBX_LINE = "    sip: {host: 127.0.0.1, port: 5060}\n"


def example_without_fax_dir() -> str:
    """The example practice with its own fax_dir line taken out."""
    return "".join(line for line in EXAMPLE.read_text().splitlines(keepends=True)
                   if not line.startswith("    fax_dir:"))


@pytest.mark.parametrize(("line", "expected"), [
    ("", "/var/lib/backline/fax"),
    ("    fax_dir: /srv/faxes\n", "/srv/faxes"),
])
def test_fax_dir_is_read_from_the_pbx_section(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "practice.yaml"
    path.write_text(example_without_fax_dir().replace(PBX_LINE, PBX_LINE + line))
    pbx = config.load(path).directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.fax_dir == expected


def test_a_relative_fax_dir_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "practice.yaml"
    path.write_text(example_without_fax_dir().replace(PBX_LINE,
                                                      PBX_LINE + "    fax_dir: faxes\n"))
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert [p.field for p in caught.value.problems] == ["connections.pbx.fax_dir"]


def test_a_fax_left_in_the_spool_by_failed_storage_is_taken_in_once_storage_returns(
        tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    spooled = desk.spooled(fax_tiff((letter(STANDARD, 1),)))
    os.chmod(spooled, 0o644)  # as an Asterisk with umask 022 writes it
    desk.store.write_text("the fax disk is not mounted\n")  # storage fails during the call
    end = FaxEnd(UID, "+17205550141", FAX, FaxStatus.SUCCESS, 1, "ACME")
    assert asyncio.run(desk.intake.fax_ended(end)) is True  # the sender saw success
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and (a.outcome, a.file) == (Outcome.UNREADABLE, str(spooled))
    assert asyncio.run(desk.intake.take_left_in_spool()) == 0  # storage still fails
    assert spooled.exists() and (spooled.stat().st_mode & 0o777) == 0o600  # patient data
    desk.store.unlink()  # storage is back
    assert asyncio.run(desk.intake.take_left_in_spool()) == 1
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.RECEIVED, a
    assert a.file == str(desk.store / f"fax-{UID}.pdf") and Path(a.file).exists()
    assert a.detail.startswith("1 page; taken from the PBX's spool later"), a.detail
    assert not spooled.exists() and list(desk.store.glob("*.tif")) == []
    assert asyncio.run(desk.intake.take_left_in_spool()) == 0
    assert len(desk.journal.attempts()) == 1


def test_a_fax_journaled_with_no_page_is_corrected_when_its_tiff_turns_up(
        tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    assert asyncio.run(desk.intake.fax_ended(FaxEnd(UID, "x", FAX, FaxStatus.SUCCESS, 1)))
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and (a.outcome, a.file, a.detail) == (
        Outcome.UNREADABLE, "", "no page received")
    desk.spooled(fax_tiff((letter(STANDARD, 2),)))
    assert asyncio.run(desk.intake.take_left_in_spool()) == 1
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.RECEIVED and a.file.endswith(".pdf")


def test_a_fax_is_not_journaled_as_nothing_received_from_a_spool_that_is_not_there(
        tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.spooled(fax_tiff((letter(STANDARD, 3),)))
    right = desk.intake.spool
    desk.intake.spool = tmp_path / "var" / "spool" / "asterisk"  # not this PBX's
    row = CdrRow("x", FAX, "backline-fax", "ReceiveFAX", AT, UID)
    assert asyncio.run(desk.intake.import_row(row, Mode.OUTAGE)) is False
    assert desk.journal.attempt(f"fax:{UID}") is None  # left for the next import
    desk.intake.spool = right
    assert asyncio.run(desk.intake.import_row(row, Mode.OUTAGE)) is True
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.RECEIVED


class LogEvents(logging.Handler):
    """Wakes a waiting test when the fax intake logs a line containing ``needle``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.loop.call_soon_threadsafe(self.changed.set)

    async def wait_for(self, needle: str, within: float) -> None:
        async with asyncio.timeout(within):
            while not any(needle in line for line in self.lines):
                self.changed.clear()
                await self.changed.wait()


async def test_a_running_controller_takes_in_a_fax_left_in_the_spool_once_storage_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from telephony import controller as controller_mod

    path = tmp_path / "practice.yaml"
    path.write_text("practice: {name: P, timezone: America/Chicago}\n"
                    f"numbers:\n  - {{number: '{FAX}', carries: [fax]}}\n"
                    "connections:\n"
                    f"  storage: {{url: 'sqlite://{tmp_path}/journal.db'}}\n"
                    "  pbx:\n"
                    "    ami: {secret_env: BACKLINE_TEST_AMI_SECRET}\n"
                    f"    fax_dir: {tmp_path}/fax\n"
                    f"    spool_dir: {tmp_path}/spool\n")
    d = config.load(path).directory
    journal = open_journal(d.connections.storage.url)
    controller = controller_mod.Controller(d, journal)
    faxes = controller.faxes
    faxes.spool.mkdir()
    faxes.store.write_text("the fax disk is not mounted\n")
    (faxes.spool / spool_name(UID)).write_bytes(fax_tiff((letter(STANDARD, 1),)))
    assert await faxes.fax_ended(FaxEnd(UID, "+17205550141", FAX, FaxStatus.SUCCESS, 1))
    monkeypatch.setattr(controller_mod, "FAX_RETRY_SECONDS", 0.05)  # the clock, not a peer
    events = LogEvents(asyncio.get_running_loop())
    logging.getLogger("backline.fax").addHandler(events)
    try:
        await controller.start()
        await events.wait_for("could not be moved", 5)  # a round while storage still fails
        faxes.store.unlink()  # storage is back
        await events.wait_for("is now taken in", 5)
    finally:
        logging.getLogger("backline.fax").removeHandler(events)
        await controller.close()
    a = journal.attempt(f"fax:{UID}")
    journal.close()
    assert a is not None and a.outcome is Outcome.RECEIVED and a.file.endswith(".pdf"), a
