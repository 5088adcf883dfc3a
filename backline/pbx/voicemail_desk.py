"""Voicemail intake: each message the PBX recorded is copied into Backline's own store and
journaled once, held for the inbox; a call that went unanswered and left no message is
journaled as a missed call, also when its end came while the controller was away.

The PBX's spool is the record: app_voicemail writes ``voicemail/backline/BOX/FOLDER/msgNNNN``
(``.txt`` and ``.wav``) whether or not the controller is up, so a message left while it was
away is still there when it returns.  The spool is read whole at every PBX login (with the
CDR import) and a box again when a call there ends (the dialplan's h extension), each message
keyed by its ``msg_id``: journaled once, however often it is read, and also after a member
listened to it (moved to ``Old``) on a desk phone.  A call whose end the controller did
not hear is told from the PBX's call record at the next login (``take_missed``): the same
``missed:`` record the live path writes, so it is journaled once either way.

The audio is patient data: the copy is written 0600 in a 0700 directory, fsynced and renamed
into place before the message is journaled, and only the controller's process reads it (to
send it to the inbox, to play it on a member's link page).  No log line names a caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from pathlib import Path

from backline.core import e164
from backline.core.ownership import OwnershipBook
from backline.core.records import Attempt, NewAttempt
from backline.core.voicemail import (
    CallEnd,
    LeftMessage,
    NotAMessage,
    RecordedEnd,
    VoicemailMessage,
    missed_call_attempt,
    missed_while_away,
    parse_message,
    voicemail_attempt,
    voicemail_key,
    wav_seconds,
)
from backline.pbx.spool_lock import FolderHeld, folder_lock, remove_dead_locks

log = logging.getLogger("backline.voicemail")

VOICEMAIL_CONTEXT = "backline"  # voicemail.conf's context (backline.render.asterisk)
MAX_AUDIO_BYTES = 64 * 1024 * 1024  # 180 s at 8 kHz, 16 bit is under 3 MB
# A message left on a call: on the same channel, and not long before the call ended.
_SAME_CALL = timedelta(hours=2)
# The journal's messages looked at for a call's end: those left within its start and end,
# give or take this (both Asterisk's clock, cut to the second).
_AROUND_CALL = timedelta(seconds=2)


_MESSAGE = "msg[0-9][0-9][0-9][0-9].txt"  # a message's text file in a folder


def _msg_id(info: Path) -> str:
    """The msg_id of a message's text file; "" for one that is not a whole message."""
    try:
        return parse_message(info.read_text("utf-8", "replace"), info.parent.parent.name).msg_id
    except (FileNotFoundError, NotAMessage):
        return ""


def voicemail_store(fax_dir: Path) -> Path:
    """Where the controller keeps voicemail: beside ``connections.pbx.fax_dir``."""
    return fax_dir.parent / "voicemail"


class VoicemailIntake:
    """``record`` journals an attempt (True if new); ``recorded`` looks one up by key (in a
    worker thread); ``spool`` says where the PBX's spool is on this host now."""

    def __init__(self, store: Path, book: OwnershipBook,
                 record: Callable[[NewAttempt], Awaitable[bool]],
                 recorded: Callable[[str], Attempt | None], spool: Callable[[], Path],
                 clock: Callable[[], datetime], *, node: str = "",
                 journaled: Callable[[datetime, datetime], list[Attempt]] | None = None,
                 ) -> None:
        """``journaled`` lists the messages journaled as left between two times (in a worker
        thread): without it, a call that reached the voicemail is never told missed (in doubt)."""
        self.store = store
        self.book = book
        self._record = record
        self._recorded = recorded
        self._spool = spool
        self._clock = clock
        self._node = node
        self._journaled = journaled
        # One read of the spool at a time: a call's end and a login may both read it.
        self._lock = asyncio.Lock()

    def number_of(self, box: str) -> str | None:
        return next((n.number for n in self.book.directory.numbers
                     if n.voicemail_box == box), None)

    async def take_spool(self, box: str | None = None) -> list[VoicemailMessage]:
        """Journal every message in the spool (of ``box``, or of every box) not yet
        journaled; return every message seen there."""
        async with self._lock:
            seen = await asyncio.to_thread(self._messages, box)
            for message, audio in seen:
                await self._take(message, audio)
            return [m for m, _ in seen]

    async def call_ended(self, end: CallEnd) -> bool:
        """A call ended unanswered: its message is journaled, or, if it left none, a missed
        call; True if something new was journaled."""
        number = self.number_of(end.box)
        if number is None:
            log.error("a call ended on voicemail box %s, which no number has", end.box[:40])
            return False
        now = self._clock()
        if end.voicemail:
            try:
                messages = await self.take_spool(end.box)
            except OSError as exc:
                # Whether a message was left cannot be told: the next login reads the spool.
                log.error("the voicemail spool cannot be read: %s", exc.strerror or exc)
                return False
            if end.channel and any(m.channel == end.channel and now - m.at < _SAME_CALL
                                   for m in messages):
                return True
        new = await self._record(missed_call_attempt(end.uniqueid, number, end.caller, now,
                                                     node=self._node))
        if new:
            log.info("missed call from %s to %s: no answer and no message",
                     e164.redact(end.caller), number)
        return new

    async def message_left(self, message: VoicemailMessage, audio: Path) -> bool:
        """The PBX says ``message`` was left, its recording at ``audio`` (FreeSWITCH's
        ``vm::maintenance`` event): kept and journaled once by its key, however often it is
        told; True if it was new."""
        async with self._lock:
            return await self._take(message, audio)

    async def take_missed(self, ends: list[RecordedEnd],
                          seen: list[VoicemailMessage]) -> int:
        """Journal as missed each call that ``ends`` (the PBX's call record) shows went
        unanswered and left no message, ``seen`` being every message in the spool now; return
        how many are new.  A call already journaled as missed (its end was heard) is skipped."""
        spooled = [LeftMessage(number, m.at, m.channel) for m in seen
                   if (number := self.number_of(m.box)) is not None]
        ours = {n.number for n in self.book.directory.numbers if n.voicemail_box}
        new = 0
        for end in ends:
            missed = missed_while_away(end, spooled, node=self._node)
            if missed is None or end.number not in ours or \
                    await asyncio.to_thread(self._recorded, missed.key) is not None:
                continue
            if end.voicemail:  # a message journaled, then deleted from the spool
                if self._journaled is None:
                    continue  # no journal to ask: in doubt, nothing
                kept = await asyncio.to_thread(self._journaled, end.start - _AROUND_CALL,
                                               end.end + _AROUND_CALL)
                missed = missed_while_away(end, [*spooled, *(
                    LeftMessage(a.recipient, a.at) for a in kept)], node=self._node)
                if missed is None:
                    continue
            if await self._record(missed):
                new += 1
                log.info("missed call from %s to %s while the controller was away: no "
                         "answer and no message", e164.redact(end.caller), end.number)
        return new

    async def _take(self, message: VoicemailMessage, audio: Path) -> bool:
        key = voicemail_key(message.msg_id)
        if await asyncio.to_thread(self._recorded, key) is not None:
            return False
        number = self.number_of(message.box)
        if number is None:
            return False  # a box no number has now (a number removed from the YAML): left alone
        try:
            stored = await asyncio.to_thread(self._keep, message, audio)
        except (OSError, ValueError) as exc:
            # Left in the spool: the next read (a call's end, a login) tries again.
            log.error("voicemail %s on %s could not be kept: %s", message.msg_id, number,
                      exc.strerror if isinstance(exc, OSError) else exc)
            return False
        new = await self._record(voicemail_attempt(message, number, str(stored),
                                                   node=self._node))
        if new:
            log.info("voicemail from %s to %s kept (%d s)", e164.redact(message.caller),
                     number, message.seconds)
        return new

    async def forget(self, msg_ids: Collection[str]) -> dict[str, list[str]]:
        """Remove each message of ``msg_ids`` from the PBX's spool, in whichever folder it is
        (one a member listened to is in ``Old``): the names removed, by msg_id (none for a
        message no longer there).  Retention's, for messages the inbox accepted long ago; a
        message left there would not be journaled again anyway (its key is in the journal),
        but it is patient data on the PBX.  Raises OSError when the spool cannot be read or a
        file cannot be removed (retention then removes nothing of that message), FolderHeld
        when app_voicemail held a folder's lock (with what went from the others).  First,
        with none wanted too, the locks Backline processes left held as they died go
        (backline.pbx.spool_lock.remove_dead_locks)."""
        async with self._lock:
            return await asyncio.to_thread(self._forget, frozenset(msg_ids))

    async def remove_dead_locks(self) -> list[str]:
        """The spool's folder locks left by Backline processes that died holding them,
        removed: the folders freed.  Raises OSError when the spool cannot be read."""
        async with self._lock:
            return await asyncio.to_thread(
                remove_dead_locks, self._spool() / "voicemail" / VOICEMAIL_CONTEXT)

    def _forget(self, wanted: frozenset[str]) -> dict[str, list[str]]:
        root = self._spool() / "voicemail" / VOICEMAIL_CONTEXT
        removed: dict[str, list[str]] = {}
        held: list[str] = []
        remove_dead_locks(root)
        if not wanted or not root.is_dir():
            return removed
        for folder in sorted(p for p in root.glob("*/*") if p.is_dir() and p.name != "tmp"):
            if not any(folder.glob(_MESSAGE)):
                continue
            # app_voicemail's own lock of the folder (backline.pbx.spool_lock): it renumbers
            # a box's messages when a member deletes one, and another message must not go in
            # this one's place; each text file is read under it, just before its message goes.
            with folder_lock(folder) as ours:
                if not ours:
                    held.append(f"{folder.parent.name}/{folder.name}")
                    continue
                for info in sorted(folder.glob(_MESSAGE)):
                    msg_id = _msg_id(info)
                    if msg_id not in wanted:
                        continue
                    # The audio first, the text file last: a removal cut short leaves a
                    # message this finds (and finishes) next time, never audio that no text
                    # file lists.
                    parts = sorted(folder.glob(f"{info.stem}.*"), key=lambda p: p == info)
                    for part in parts:
                        part.unlink(missing_ok=True)
                    removed.setdefault(msg_id, []).extend(p.name for p in parts)
        if held:
            raise FolderHeld(held, removed)
        return removed

    def _messages(self, box: str | None) -> list[tuple[VoicemailMessage, Path]]:
        """Whole messages in the spool, oldest first."""
        root = self._spool() / "voicemail" / VOICEMAIL_CONTEXT
        boxes = [root / box] if box is not None else \
            (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
        found: list[tuple[VoicemailMessage, Path]] = []
        for box_dir in boxes:
            if not box_dir.is_dir():
                continue
            for info in sorted(box_dir.glob("*/msg[0-9][0-9][0-9][0-9].txt")):
                if info.parent.name == "tmp":  # being recorded
                    continue
                audio = info.with_suffix(".wav")
                try:
                    message = parse_message(info.read_text("utf-8", "replace"), box_dir.name)
                except (OSError, NotAMessage):
                    continue
                if audio.is_file():
                    found.append((message, audio))
        return sorted(found, key=lambda f: (f[0].at, f[0].msg_id))

    def _keep(self, message: VoicemailMessage, audio: Path) -> Path:
        """Copy the audio into the store (0600, fsynced, renamed into place)."""
        with audio.open("rb") as f:
            data = f.read(MAX_AUDIO_BYTES + 1)
        if len(data) > MAX_AUDIO_BYTES:
            raise ValueError("larger than any message")
        wav_seconds(data)  # a WAVE file, or ValueError: nothing half-written is kept
        self.store.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.store, 0o700)  # an existing directory too: the audio is patient data
        dest = self.store / f"voicemail-{message.msg_id}.wav"
        tmp = dest.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an earlier try keeps no wider mode
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        dir_fd = os.open(self.store, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return dest
