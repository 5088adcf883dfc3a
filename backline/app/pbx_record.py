"""What the PBX did while the controller was away: its call record (CDR) imported, and the
faxes and voicemail left in its spool taken in.  Run after every PBX login, and the faxes
every ``FAX_RETRY_SECONDS`` besides.

App-level, not a feature: it reads each PBX's own files (``backline.pbx.asterisk.cdr``,
``backline.pbx.freeswitch.cdr``), and features never import a driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path

from backline.app.mode_keeper import mode_at
from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.core.emergency import EmergencyCall
from backline.core.model import Directory
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.voicemail import VoicemailMessage
from backline.features.status.health import Health, Verdict, idle
from backline.features.voicemail.locks import locks_health, unreadable
from backline.journal import Journal, JournalError, NewAttempt
from backline.localpbx.phone_secrets import SecretsFileError, kept
from backline.localpbx.whereabouts import NotAsteriskSettings, parse_settings, root_of, under
from backline.pbx.asterisk import cdr
from backline.pbx.fax_desk import DEFAULT_FAX_DIR, FaxIntake
from backline.pbx.freeswitch import cdr as freeswitch_cdr
from backline.pbx.ports import FAX_CONTEXTS, CdrReading, PbxError
from backline.pbx.spool_lock import held_too_long
from backline.pbx.voicemail_desk import VOICEMAIL_CONTEXT, VoicemailIntake, voicemail_store

log = logging.getLogger("backline.controller")


def row_token_state(secrets: Path) -> tuple[str, str]:
    """The install's row token for FreeSWITCH's call record, kept in the ``secrets`` file
    ``backline render`` wrote, and "" with why (never the token) if there is none to use."""
    try:
        token = kept(secrets).get(freeswitch_cdr.TOKEN_KEY, "")
    except FileNotFoundError:
        return "", f"{secrets} is missing"
    except OSError as exc:
        return "", f"{secrets}: {exc.strerror or exc}"
    except SecretsFileError as exc:
        return "", str(exc)
    if not token:
        return "", f"{secrets} holds none"
    if not freeswitch_cdr.TOKEN.fullmatch(token):
        return "", f"the one in {secrets} is malformed"
    return token, ""


def row_token(secrets: Path, health: dict[str, Health], at: datetime) -> str:
    """:func:`row_token_state`'s token, told to ``health`` at ``at``; "" (every tokened row
    skipped) said loudly."""
    token, why = row_token_state(secrets)
    health["call_record"] = row_token_health(secrets, token, why, at)
    if not token:
        log.error("the call record's row token cannot be read (%s): rows FreeSWITCH wrote "
                  "while the controller was away are not imported; render again with "
                  "connections.pbx.secrets_file", why)
    return token


def row_token_health(secrets: Path, token: str, why: str, at: datetime) -> Health:
    """The status page's ``call_record`` line on FreeSWITCH: failing while no row token is
    read, since the import then takes nothing and says so only in the log."""
    if token:
        return Health(Verdict.OK, f"its row token is read from {secrets}", last_success=at)
    return Health(Verdict.FAILING, "the PBX's call record cannot be imported: calls FreeSWITCH "
                  "took while the controller was away are not journaled; fix: `backline "
                  f"render CONFIG --out DIR --secrets {secrets}` (connections.pbx.secrets_file)"
                  ", then `reload mod_cdr_csv` in fs_cli", last_error=f"no row token ({why})",
                  last_error_at=at)


def read_tokened(lines: Iterable[str], secrets: Path, health: dict[str, Health],
                 at: datetime) -> CdrReading:
    """FreeSWITCH's call record read with the row token in ``secrets``; ``health`` failing
    too when its rows all carry another token (its config rendered with another secrets
    file, or the file made anew), since each of them is then skipped."""
    token = row_token(secrets, health, at)
    reading = freeswitch_cdr.read(lines, token)
    if token and reading.other_token:
        health["call_record"] = Health(
            Verdict.FAILING, "the PBX's call record cannot be imported: its rows carry "
            f"another row token than {secrets}'s, so calls FreeSWITCH took while the "
            "controller was away are not journaled; fix: `backline render CONFIG --out DIR "
            f"--secrets {secrets}` (connections.pbx.secrets_file), then `reload mod_cdr_csv` "
            "in fs_cli", last_error="its rows carry another row token", last_error_at=at)
        log.error("the call record's rows carry another row token than %s's: rows "
                  "FreeSWITCH wrote while the controller was away are not imported; render "
                  "again with connections.pbx.secrets_file", secrets)
    return reading


# How often faxes left in the PBX's spool (storage failed during the call) are tried again,
# besides at every AMI login: a fax is converted within this long of storage coming back.
FAX_RETRY_SECONDS = 30.0


class PbxRecord:
    """``record_attempt`` journals one attempt (True if new); ``emergency`` journals a 911
    call found in the record and sends its notices, late (True if new)."""

    def __init__(self, directory: Directory, journal: Journal,
                 record_attempt: Callable[[NewAttempt], Awaitable[bool]],
                 emergency: Callable[[EmergencyCall], Awaitable[bool]],
                 mode: Callable[[], Mode], clock: Callable[[], datetime], *,
                 book: OwnershipBook | None = None, node: str = "",
                 imported: asyncio.Event | None = None,
                 health: dict[str, Health] | None = None) -> None:
        """``imported`` is set when an import has completed (see import_pbx_record);
        ``health`` (the status page's) gets ``call_record`` on FreeSWITCH."""
        self.directory = directory
        self.imported = imported or asyncio.Event()
        self.journal = journal
        self._record_attempt = record_attempt
        self._emergency = emergency
        self._clock = clock
        pbx = directory.connections.pbx
        # Where the PBX's call record is read: the config's, else asked of Asterisk at every
        # AMI login (learn_pbx_files); `pbx_root` is the root `backline up` runs it in.
        self.cdr_path: Path | None = Path(pbx.cdr_file) if pbx is not None and pbx.cdr_file \
            else None
        self.pbx_root: Path | None = None
        self.pbx_settings: Callable[[], Awaitable[str]] | None = None
        # Each PBX writes its CDR its own way; both are read in one pass into a CdrReading,
        # its 911s by the practice's emergency numbers as they are now (the book follows
        # reloads).
        self.book = book or OwnershipBook(directory)
        self.cdr_read: Callable[[Iterable[str]], CdrReading] = \
            lambda lines: cdr.read(lines, self.book.directory.emergency_numbers)
        if isinstance(pbx, FreeswitchPbx):
            secrets = Path(pbx.secrets_file)
            said = {} if health is None else health
            self.cdr_read = lambda lines: read_tokened(lines, secrets, said, clock())
            row_token(secrets, said, clock())  # at start: on the status page, not only logged
        # Faxes: kept in connections.pbx.fax_dir; `faxes.spool` is where this controller reads
        # the PBX's spool (`backline up` points it inside the Asterisk root).
        self.faxes = FaxIntake(
            Path(pbx.fax_dir if pbx is not None else DEFAULT_FAX_DIR),
            directory.practice.timezone, record_attempt, journal.attempt, mode,
            clock=clock, correct=journal.correct_fax)
        if isinstance(pbx, FreeswitchPbx):  # rxfax writes there, on this host
            self.faxes.spool = Path(pbx.fax_spool)
        elif isinstance(pbx, AsteriskPbx) and pbx.spool_dir:
            self.faxes.spool = Path(pbx.spool_dir)
        # Voicemail: read from the same spool, kept beside the fax directory (voicemail/).
        self.voicemail = VoicemailIntake(
            voicemail_store(self.faxes.store), self.book,
            record_attempt, journal.attempt, lambda: self.faxes.spool, clock, node=node,
            journaled=journal.voicemail_between)

    async def forget_voicemail(self, msg_ids: Collection[str]) -> dict[str, list[str]] | None:
        """Remove these messages from the PBX's spool (retention, see the voicemail intake's
        ``forget``); None where the PBX's copy is not Backline's to remove: FreeSWITCH keeps
        its messages in mod_voicemail's own database."""
        if not isinstance(self.directory.connections.pbx, AsteriskPbx):
            return None
        return await self.voicemail.forget(msg_ids)

    def folder_locks(self, now: Callable[[], float] = time.time) -> dict[str, Health]:
        """The status page's ``voicemail_locks``: a voicemail folder's lock held too long, which
        makes app_voicemail drop every message left there (backline.features.voicemail.locks),
        retention or not; ``now`` is compared with the locks' file times.  On Asterisk only
        (FreeSWITCH's mod_voicemail takes no such lock).  Reads the spool: off the event loop."""
        if not isinstance(self.directory.connections.pbx, AsteriskPbx):
            return {}
        at, spool = self._clock(), self.faxes.spool
        if not spool.is_dir():  # not asked of Asterisk yet, or not seen from this host
            return {"voicemail_locks": idle(f"the PBX's spool is not seen at {spool} (yet)")}
        try:
            held = held_too_long(spool / "voicemail" / VOICEMAIL_CONTEXT, now())
        except OSError as exc:
            return {"voicemail_locks": unreadable(exc.strerror or str(exc), at)}
        return {"voicemail_locks": locks_health(held, self.voicemail.number_of, at)}

    async def retry_spooled_faxes(self, closing: asyncio.Event) -> None:
        """Every FAX_RETRY_SECONDS until ``closing`` is set: faxes left in the PBX's spool."""
        while not closing.is_set():
            try:
                await self.faxes.take_left_in_spool()
            except (OSError, JournalError) as exc:
                log.error("faxes left in the PBX's spool could not be taken in: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), FAX_RETRY_SECONDS)

    async def learn_pbx_files(self) -> None:
        """Ask the PBX where it keeps its call record and fax spool (unless the config names
        them), as seen from this host; say loudly when the call record cannot be read, since
        calls the PBX answers while the controller is away would then never be journaled."""
        pbx = self.directory.connections.pbx
        if not isinstance(pbx, AsteriskPbx) or self.pbx_settings is None:
            return
        try:
            dirs = parse_settings(await self.pbx_settings())
        except (PbxError, NotAsteriskSettings) as exc:
            log.error("could not ask Asterisk where it keeps its call records and faxes (%s)%s",
                      exc, "" if self.cdr_path else ": calls it answers while the controller "
                      "is away cannot be imported")
            return
        root = self.pbx_root or await asyncio.to_thread(root_of, dirs.pid_file) or Path("/")
        if not pbx.cdr_file:
            self.cdr_path = under(root, dirs.cdr_file)
        if not pbx.spool_dir:
            self.faxes.spool = under(root, dirs.spool)
        cdr_path, spool = self.cdr_path, self.faxes.spool
        assert cdr_path is not None
        if not dirs.cdr_enabled:
            log.error("Asterisk writes no call records (CDR disabled): calls it answers while "
                      "the controller is away cannot be imported")
        elif not await asyncio.to_thread(cdr_path.parent.is_dir):
            log.error("the PBX's call record %s cannot be found (no such directory): calls it "
                      "answers while the controller is away cannot be imported; set "
                      "connections.pbx.cdr_file to where this host sees it", cdr_path)
        if not await asyncio.to_thread(spool.is_dir):
            log.error("the PBX's fax spool %s cannot be found: faxes it receives while the "
                      "controller is away cannot be taken in; set connections.pbx.spool_dir",
                      spool)
        log.info("the PBX's call record is %s, its fax spool %s", cdr_path, spool)

    async def import_pbx_record(self) -> int:
        """Journal the calls the PBX answered on its own (its CDR); return how many were new.
        Then take in faxes and voicemail left in its spool, and the missed calls whose end the
        controller did not hear.  Run after every AMI login.

        Safe to run any number of times: each call's key is the one the controller uses
        when it is up, so nothing is recorded twice.  Sets ``imported`` when done (not when
        it raised: the next login imports again).
        """
        await self.learn_pbx_files()
        reading = await self._read_cdr()
        new = await self._import_cdr(reading) if reading is not None else 0
        await self.faxes.take_left_in_spool()
        if isinstance(self.directory.connections.pbx, AsteriskPbx):
            try:
                # A controller killed holding a folder's lock (retention's) left it: removed
                # now, retention on or off, or app_voicemail drops every message there.
                await self.voicemail.remove_dead_locks()
            except OSError as exc:  # the messages and missed calls are still taken below
                log.error("a voicemail folder lock left by a Backline process that ended "
                          "could not be removed: %s", exc.strerror or exc)
            try:
                seen = await self.voicemail.take_spool()
            except OSError as exc:
                # Whether a call left a message cannot be told: no missed call either.
                log.error("voicemail left in the PBX's spool could not be read: %s",
                          exc.strerror or exc)
            else:
                await self._take_missed(reading, seen)
        elif isinstance(self.directory.connections.pbx, FreeswitchPbx):
            # mod_cdr_csv's row says itself whether mod_voicemail kept a message of the call;
            # the messages left meanwhile were taken in (vm_list) before this import.
            await self._take_missed(reading, [])
        self.imported.set()
        return new

    async def _take_missed(self, reading: CdrReading | None,
                           seen: list[VoicemailMessage]) -> None:
        """The missed calls the call record tells whose end the controller did not hear."""
        ends = [] if reading is None else list(reading.ends)
        if ends and (missed := await self.voicemail.take_missed(ends, seen)):
            log.warning("%d missed call(s) ended while the controller was away are now "
                        "journaled", missed)

    async def _read_cdr(self) -> CdrReading | None:
        """The call record read in one pass, in a worker thread: a year's record is megabytes,
        and the event loop decides calls meanwhile."""
        if self.cdr_path is None:
            return None
        try:
            return await asyncio.to_thread(self._read_cdr_file, self.cdr_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read the PBX's call record %s: %s", self.cdr_path, exc)
            return None

    def _read_cdr_file(self, path: Path) -> CdrReading:
        # Line by line as the readers take them: the file is never held whole.
        with path.open(encoding="utf-8", errors="replace") as lines:
            reading = self.cdr_read(lines)
        if reading.skipped:  # how many, never what: a caller may have written them
            log.warning("%d line(s) of the PBX's call record %s were no row it wrote as "
                        "rendered (a caller ID that broke its row, or a torn write): "
                        "skipped", reading.skipped, path)
        return reading

    async def _import_cdr(self, reading: CdrReading) -> int:
        late_911 = 0
        for call in reading.emergencies:  # first: people on site are waiting
            try:
                late_911 += await self._emergency(call)
            except JournalError as exc:
                log.error("EMERGENCY: a 911 call in the PBX's record could not be journaled "
                          "(%s); the next import tries again", exc)
        if late_911:
            log.warning("%d emergency call(s) placed while the controller was away: their "
                        "notices go out now, late", late_911)
        history = await asyncio.to_thread(self.journal.mode_history, 1000)
        new = 0
        for row in reading.rows:
            if row.context in FAX_CONTEXTS:  # converted and stored too, not only journaled
                recorded = await self.faxes.import_row(row, mode_at(history, row.start))
            else:
                recorded = await self._record_attempt(
                    cdr.attempt_for(row, lambda at: mode_at(history, at)))
            if recorded:
                new += 1
        if new:
            log.warning("%d call(s) answered by the PBX while the controller was away are now "
                        "journaled", new)
        return new
