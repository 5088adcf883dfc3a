"""Fax intake for either PBX (the :class:`~backline.pbx.ports.FaxDesk` both drivers report
to): the received TIFF from the PBX's spool into the fax directory, its PDF beside it,
verified, and one journal record per fax.

Both PBXs write ``fax-CALLID.tif`` (``backline.pbx.names.FAX_FILE``) into a spool of their
own: Asterisk's ReceiveFax into ``${ASTSPOOLDIR}`` (backline.render.asterisk_dialplan),
FreeSWITCH's rxfax into ``fax_spool``.  That directory exists on every PBX, so it still
receives when the controller is down, and it needs no path of ours: for the chroot Asterisk
instance it lies inside the root, and the controller reads it at ``spool``, its host path.
Faxes are then kept in ``store`` (``connections.pbx.fax_dir``), wherever the controller may
write.

The steps run in this order so that a crash at any point loses nothing, and the next report of
the same fax (the CDR import after a restart) finishes the job:

1. the TIFF is copied into the store (fsynced, renamed into place), then removed from the spool;
2. it is converted; the PDF is written (fsynced, renamed), read back and verified;
3. the attempt is journaled (the alert goes out from there);
4. only then is the TIFF removed.  A TIFF that cannot be read stays, and is journaled as such:
   "read" means every page decoded in full (``fax.ccitt``), within fax/'s bounds on pages,
   pixels and PDF bytes, never just a PDF that parses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from backline.core import e164
from backline.core.fax_intake import (
    MIN_FREE_BYTES,
    BadFaxReport,
    Converted,
    FaxEnd,
    NothingReceived,
    NotStored,
    StorageCheck,
    Stored,
    Unreadable,
    check_uniqueid,
    fax_attempt,
    fax_key,
    recipient,
    rejected_by_pbx,
    storage_verdict,
    stored_names,
    taken_in_late,
)
from backline.core.outage import Mode
from backline.core.records import Attempt, NewAttempt, Outcome
from backline.fax.errors import PdfMismatch, UnreadableTiff
from backline.fax.header import FaxHeader
from backline.fax.pdf import tiff_to_pdf
from backline.fax.verify import verify_pdf
from backline.pbx import names
from backline.pbx.ports import REJECT_CONTEXT, CdrRow

log = logging.getLogger("backline.fax")

# Debian's astspooldir: where an Asterisk installed on the host writes received faxes.
DEFAULT_SPOOL = Path("/var/spool/asterisk")
DEFAULT_FAX_DIR = Path("/var/lib/backline/fax")  # connections.pbx.fax_dir's default
# Far above any fax (a page is tens of kilobytes); a bigger "TIFF" is not read into memory.
MAX_TIFF_BYTES = 64 * 1024 * 1024


def spool_name(uniqueid: str) -> str:
    """The file the PBX writes in its spool for the fax of call ``uniqueid``."""
    return names.FAX_FILE.format(uuid=check_uniqueid(uniqueid))


class FaxIntake:
    """Takes in each fax once: stores it, converts it, journals it.

    ``record`` journals an attempt (True if new); ``recorded`` looks one up by key (called in
    a worker thread); ``mode`` and ``clock`` give the mode and the time of a fax reported now.
    """

    def __init__(self, store: Path, timezone: str,
                 record: Callable[[NewAttempt], Awaitable[bool]],
                 recorded: Callable[[str], Attempt | None], mode: Callable[[], Mode],
                 *, spool: Path = DEFAULT_SPOOL,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 correct: Callable[[str, Outcome, Outcome, str, str], Attempt | None]
                 | None = None) -> None:
        self.store = store
        self.spool = spool
        # The journal's correct_fax (called in a worker thread): a fax journaled while its
        # TIFF stayed in the spool is corrected once it is taken in (take_left_in_spool).
        self._correct = correct
        self.zone = ZoneInfo(timezone)
        self.min_free = MIN_FREE_BYTES
        self._record = record
        self._recorded = recorded
        self._mode = mode
        self._clock = clock
        # One fax at a time: the h extension and a CDR import may report the same fax, and
        # conversions are short (well under a second a page).
        self._lock = asyncio.Lock()

    async def storage(self) -> StorageCheck:
        """Can the fax directory take a fax now?  Asked before a fax call is answered."""
        return await asyncio.to_thread(probe_storage, self.store, self.min_free)

    async def fax_ended(self, end: FaxEnd) -> bool:
        """A fax call ended (the dialplan's h extension); True if newly journaled."""
        return await self._take(end, self._clock(), self._mode(), by_pbx_alone=False)

    async def import_row(self, row: CdrRow, mode: Mode) -> bool:
        """A fax call in the PBX's CDR (received or refused by the PBX while the controller was
        away, or already taken in: then nothing happens); True if newly journaled."""
        try:
            if row.context == REJECT_CONTEXT:
                return await self._record(rejected_by_pbx(row.uniqueid, row.caller, row.dialled,
                                                          at=row.start, mode=mode))
            end = FaxEnd(row.uniqueid, row.caller, row.dialled)
            return await self._take(end, row.start, mode, by_pbx_alone=True)
        except BadFaxReport as exc:
            log.error("a fax row in the PBX's CDR is not ours: %s", exc)
            return False

    async def _take(self, end: FaxEnd, at: datetime, mode: Mode, *, by_pbx_alone: bool) -> bool:
        key = fax_key(end.uniqueid)
        async with self._lock:
            known = await asyncio.to_thread(self._recorded, key)
            if known is not None:
                await asyncio.to_thread(self._finish, end.uniqueid, known)
                return False
            if not await asyncio.to_thread(self.spool.is_dir):
                # Not "nothing received": the TIFF may well be in a spool we cannot see.  Left
                # unjournaled, the next CDR import (every AMI login) takes it in.
                log.error("fax %s not taken in: the PBX's spool %s is not there (is it where "
                          "this PBX writes?)", end.uniqueid, self.spool)
                return False
            header = FaxHeader(at.astimezone(self.zone), end.sender, recipient(end.dialed),
                               end.station_id)
            stored = await asyncio.to_thread(self._store_and_convert, end.uniqueid, header)
            new = await self._record(fax_attempt(end, stored, at=at, mode=mode,
                                                 by_pbx_alone=by_pbx_alone))
            if isinstance(stored, Converted):
                await asyncio.to_thread(self._drop_tiff, end.uniqueid)
            log.info("fax from %s to %s: %s", e164.redact(end.sender), recipient(end.dialed),
                     type(stored).__name__)
            return new

    async def take_left_in_spool(self) -> int:
        """Faxes journaled while their TIFF stayed in the PBX's spool (storage failed during
        the call; the sender saw success) are taken in now and their record corrected; return
        how many.  Run at every AMI login and periodically, so each is converted once storage
        returns.  Every fax TIFF in the spool is made 0600 on the way (patient data)."""
        if self._correct is None:
            return 0
        taken = 0
        for uniqueid in await asyncio.to_thread(self._spooled):
            async with self._lock:
                known = await asyncio.to_thread(self._recorded, fax_key(uniqueid))
                if known is None or known.outcome is not Outcome.UNREADABLE \
                        or (known.file and Path(known.file).parent == self.store):
                    continue  # still being received, or its pages were taken in already
                header = FaxHeader(known.at.astimezone(self.zone), known.sender,
                                   known.recipient, "")
                stored = await asyncio.to_thread(self._store_and_convert, uniqueid, header)
                if isinstance(stored, NotStored | NothingReceived):
                    continue  # storage still fails: the next round tries again
                fixed = taken_in_late(known, uniqueid, stored)
                corrected = await asyncio.to_thread(self._correct, fixed.key, known.outcome,
                                                    fixed.outcome, fixed.file, fixed.detail)
                if corrected is not None and isinstance(stored, Converted):
                    await asyncio.to_thread(self._drop_tiff, uniqueid)
                log.warning("fax %s left in the PBX's spool is now taken in: %s", uniqueid,
                            type(stored).__name__)
                taken += corrected is not None
        return taken

    def _spooled(self) -> list[str]:
        """The call ids of the fax TIFFs in the spool, each made 0600 if it was not."""
        found = []
        try:
            paths = list(self.spool.glob("fax-*.tif"))  # spool_name()
        except OSError:
            return []
        for path in paths:
            uniqueid = path.name.removeprefix("fax-").removesuffix(".tif")
            try:
                check_uniqueid(uniqueid)
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            except (BadFaxReport, OSError):
                continue
            found.append(uniqueid)
        return found

    def _store_and_convert(self, uniqueid: str, header: FaxHeader) -> Stored:
        spooled = self.spool / spool_name(uniqueid)
        tiff_name, pdf_name = stored_names(uniqueid)
        tiff, pdf = self.store / tiff_name, self.store / pdf_name
        try:
            move_into(spooled, tiff)
        except UnreadableTiff as exc:  # too big to be a fax: left alone, not read in
            return NotStored(str(spooled), exc.reason)
        except OSError as exc:
            log.error("fax %s could not be moved into %s: %s", uniqueid, self.store, exc)
            if spooled.exists():
                return NotStored(str(spooled), exc.strerror or str(exc))
        if not tiff.exists():
            return NothingReceived()
        return convert(tiff, pdf, header)

    def _drop_tiff(self, uniqueid: str) -> None:
        tiff_name, _ = stored_names(uniqueid)
        try:
            (self.store / tiff_name).unlink(missing_ok=True)
        except OSError as exc:  # a TIFF left behind is harmless: the PDF is the record
            log.warning("could not remove the converted TIFF of fax %s: %s", uniqueid, exc)

    def _finish(self, uniqueid: str, known: Attempt) -> None:
        """A fax journaled before: if it was converted, the TIFF may still wait to go."""
        if known.outcome is Outcome.RECEIVED and known.file and Path(known.file).exists():
            self._drop_tiff(uniqueid)


def probe_storage(store: Path, min_free: int) -> StorageCheck:
    """Write (and remove) a small file in ``store`` and read its free space.

    A real write, not ``os.access``: the controller may run as root, which access() always
    answers yes, and a full disk only shows when a write fails.
    """
    probe = store / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        stat = os.statvfs(store)
    except FileExistsError:  # mkdir(exist_ok=True) on something that is not a directory
        return storage_verdict(None, f"{store}: not a directory", min_free)
    except OSError as exc:
        return storage_verdict(None, f"{store}: {exc.strerror or exc}", min_free)
    return storage_verdict(stat.f_bavail * stat.f_frsize, None, min_free)


def move_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` durably, across file systems (the spool may be inside
    the PBX's root): copy, fsync, rename into place, fsync the directory, then unlink the
    source.  Nothing to do if ``source`` is gone (moved before, or never written)."""
    try:
        data = _read_capped(source)
    except FileNotFoundError:
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durably(target, data)
    source.unlink(missing_ok=True)


def convert(tiff: Path, pdf: Path, header: FaxHeader) -> Stored:
    """The PDF of ``tiff``, written beside it and verified by reading it back."""
    try:
        made = tiff_to_pdf(_read_capped(tiff), header)
    except UnreadableTiff as exc:
        return Unreadable(str(tiff), exc.reason)
    except OSError as exc:
        return Unreadable(str(tiff), f"the TIFF could not be read ({exc.strerror or exc})")
    except MemoryError:  # the bounds in fax/ should make this impossible; if not, keep the TIFF
        return Unreadable(str(tiff), "the TIFF is too large to convert in memory")
    try:
        write_durably(pdf, made.pdf)
        verify_pdf(pdf.read_bytes(), made.pages)
    except MemoryError:
        pdf.unlink(missing_ok=True)
        return Unreadable(str(tiff), "the PDF is too large to verify in memory")
    except PdfMismatch as exc:
        pdf.unlink(missing_ok=True)
        return Unreadable(str(tiff), f"the PDF did not verify ({exc.reason})")
    except OSError as exc:
        pdf.unlink(missing_ok=True)
        return Unreadable(str(tiff), f"the PDF could not be written ({exc.strerror or exc})")
    return Converted(str(pdf), len(made.pages), made.notes)


def write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` on disk, or is untouched: never a half-written file."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # faxes are patient data
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_TIFF_BYTES + 1)
    if len(data) > MAX_TIFF_BYTES:
        raise UnreadableTiff(f"larger than {MAX_TIFF_BYTES // (1024 * 1024)} MiB")
    return data
