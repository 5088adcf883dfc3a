"""The desk phones refusing their encrypted ring (:mod:`backline.core.srtp_refusals`), kept in
the journal (:mod:`backline.journal.srtp_refusals`) so that a controller restart still shows
them: the status page, ``/status.json`` and ``backline doctor`` would otherwise lose the
warning until the phone is rung again, and nobody would learn that it never rings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from backline.core.model import Directory
from backline.core.srtp_refusals import RefusingPhones
from backline.journal import Journal, JournalError

log = logging.getLogger("backline.controller")


class KeptRefusals(RefusingPhones):
    """:class:`RefusingPhones` that starts from the journal's list and writes each change
    there, in the order the PBX told them, off the event loop (a commit waits on the disk)."""

    def __init__(self, journal: Journal, directory: Directory) -> None:
        try:
            kept = journal.phones_refusing_encryption()
        except JournalError as exc:
            log.error("the journal's list of desk phones refusing encryption could not be "
                      "read (%s): each is named again when next rung", exc)
            kept = []
        # Only phones still rung encrypted: the YAML may have changed while it was stopped.
        names = [n for n in kept if directory.requires_srtp(n)
                 and any(n in u.desk_phones for u in directory.users if u.active)]
        super().__init__(names)
        self._journal = journal
        self._last: asyncio.Task[None] | None = None
        for gone in set(kept) - set(names):
            self._keep(journal.phone_took_encryption, gone)

    def refused(self, desk_phone: str) -> bool:
        new = super().refused(desk_phone)
        if new:
            self._keep(self._journal.phone_refused_encryption, desk_phone)
        return new

    def answered(self, desk_phone: str) -> bool:
        listed = super().answered(desk_phone)
        if listed:
            self._keep(self._journal.phone_took_encryption, desk_phone)
        return listed

    def clear(self) -> None:
        super().clear()
        self._keep(lambda _: self._journal.forget_encryption_refusals(), "")

    async def written(self) -> None:
        """Returns once every change told so far is in the journal (or its failure logged)."""
        if self._last is not None:
            await asyncio.wait([self._last])

    def _keep(self, write: Callable[[str], None], desk_phone: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # built outside the loop (the CLI, a test): write at once
            self._write(write, desk_phone)
            return
        before = self._last

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])  # in the order the PBX told them
            await asyncio.to_thread(self._write, write, desk_phone)
        self._last = asyncio.create_task(run())

    @staticmethod
    def _write(write: Callable[[str], None], desk_phone: str) -> None:
        try:
            write(desk_phone)
        except JournalError as exc:
            log.error("desk phone %s: its encryption refusal could not be kept in the "
                      "journal (%s); a restart will not show it until it is rung again",
                      desk_phone or "(all)", exc)
