"""Fax intake without Asterisk: the pure part table by table, then the shell (spool to fax
directory to verified PDF to journal) on real files and a real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backline.app import config
from backline.core.connections import AsteriskPbx
from backline.core.decisions import CallKind, FaxRefusal, InboundCall, ReceiveFax, RejectFax
from backline.core.fax_intake import (
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
from backline.core.model import Carry
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import route_inbound
from backline.journal import Delivery, Journal, NewAttempt, Outcome, open_journal
from backline.pbx.fax_desk import FaxIntake, probe_storage, spool_name
from backline.pbx.ports import REJECT_CONTEXT, CdrRow
from tests.fax_samples import (
    FINE,
    STANDARD,
    checkerboard_pages,
    fax_tiff,
    letter,
    noise_strip,
    random_data_as_group4,
    shared_strip_tiff,
    tall_blank_pages,
)
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
    from backline.app import controller as controller_mod
    from backline.app import pbx_record

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
    monkeypatch.setattr(pbx_record, "FAX_RETRY_SECONDS", 0.05)  # the clock, not a peer
    events = LogEvents(asyncio.get_running_loop())
    logging.getLogger("backline.fax").addHandler(events)
    try:
        await controller.start()
        await events.wait_for("could not be moved", 30)  # a round while storage still fails
        faxes.store.unlink()  # storage is back
        await events.wait_for("is now taken in", 30)
    finally:
        logging.getLogger("backline.fax").removeHandler(events)
        await controller.close()
    a = journal.attempt(f"fax:{UID}")
    journal.close()
    assert a is not None and a.outcome is Outcome.RECEIVED and a.file.endswith(".pdf"), a


# -- TIFF bombs (issue 18, item 7): refused, the TIFF kept, memory bounded ---------------------

BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    # 500 directories over one 1.8 MB Group 4 strip: a 900 MB PDF before the bounds.
    "shared-strip-500": (lambda: shared_strip_tiff(noise_strip(), 500, 4000), "more than 200"),
    "shared-strip-3": (lambda: shared_strip_tiff(noise_strip(), 3, 4000), "share image data"),
    "pixels": (lambda: tall_blank_pages(50), "pixels"),
    "grows-when-transcoded": (lambda: checkerboard_pages(3), "the PDF would be over"),
    "random-data-as-group4": (random_data_as_group4, "cannot be decoded"),
}
# The converting process may use this much address space; RSS is checked far below it.
_ADDRESS_SPACE = 2 * 2**30
_CONVERT_IN_A_CHILD = """
import json, sys
from datetime import UTC, datetime
from pathlib import Path
from backline.fax.header import FaxHeader
from backline.pbx.fax_desk import convert
stored = convert(Path(sys.argv[1]), Path(sys.argv[2]),
                 FaxHeader(datetime(2025, 3, 4, tzinfo=UTC), "x", "+13125550109", ""))
# The peak since exec: getrusage's ru_maxrss would include the forking parent's.
peak = next(line for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:"))
print(json.dumps({"kind": type(stored).__name__, "reason": getattr(stored, "reason", ""),
                  "max_rss_kib": int(peak.split()[1])}))
"""


def _convert_in_a_child(tiff: bytes, tmp: Path) -> dict[str, object]:
    """`convert()` in a process of its own, with its address space capped: how it ended and
    the most memory it held."""
    source = tmp / "fax.tif"
    source.write_bytes(tiff)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))

    done = subprocess.run(
        [sys.executable, "-c", _CONVERT_IN_A_CHILD, str(source), str(tmp / "fax.pdf")],
        capture_output=True, text=True, timeout=300, preexec_fn=cap, check=False,
        cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_tiff_bomb_is_kept_and_journaled_unreadable(tmp_path: Path, bomb: str) -> None:
    make, reason = BOMBS[bomb]
    tiff = make()
    desk = Desk(tmp_path)
    desk.spooled(tiff)
    assert asyncio.run(desk.intake.fax_ended(FaxEnd(UID, "x", FAX, FaxStatus.SUCCESS, 1)))
    a = desk.journal.attempt(f"fax:{UID}")
    assert a is not None and a.outcome is Outcome.UNREADABLE and reason in a.detail
    assert Path(a.file).read_bytes() == tiff  # the TIFF is kept as received: nothing lost
    assert list(desk.store.glob("*.pdf")) == [] and list(desk.store.glob("*.part")) == []


def test_tiff_bombs_are_refused_within_the_memory_of_a_real_fax(tmp_path: Path) -> None:
    real = _convert_in_a_child(fax_tiff(tuple(letter(FINE, seed) for seed in range(20))),
                               tmp_path)
    assert real["kind"] == "Converted"
    for bomb, (make, reason) in BOMBS.items():
        ended = _convert_in_a_child(make(), tmp_path)
        assert ended["kind"] == "Unreadable" and reason in str(ended["reason"]), bomb
        # A 20-page fax and the worst bomb differ by one transcoded page at most (30 MB).
        extra_mib = (int(str(ended["max_rss_kib"])) - int(str(real["max_rss_kib"]))) / 1024
        assert extra_mib < 96, (bomb, extra_mib)
