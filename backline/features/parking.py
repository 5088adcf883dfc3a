"""Parked calls in the journal: each step (parked, picked up, rang back, abandoned) is a line
of the call's record, with who, which slot and when (``call_handling``, beside transfers).

The driver tells of each step from the PBX's own parking events; the words are the core's
(:func:`backline.core.park.park_note`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from backline.core.ownership import OwnershipBook
from backline.core.park import ParkEvent, park_note
from backline.journal.conversations import CallHandling

log = logging.getLogger("backline.parking")


class HandlingStore(Protocol):
    def record_handling(self, h: CallHandling) -> None: ...


class ParkRecords:
    """Writes each parked call's steps into its journal record."""

    def __init__(self, store: HandlingStore, book: OwnershipBook, timeout: int,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.book = book
        self.timeout = timeout
        self.clock = clock

    async def on_park(self, event: ParkEvent) -> None:
        by, note = park_note(event, self.book, self.timeout)
        await asyncio.to_thread(self.store.record_handling, CallHandling(
            event.call_key, self.clock(), by, event.step.value, note))
        log.info("%s: %s", event.step.value, note)  # slots and users: no patient data
