"""The controller process: wires the journal, the mode and (from the PBX drivers on) the PBX.

``run_controller`` owns the event loop and the signals; everything it starts it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from telephony.journal import Journal, JournalError, open_journal
from telephony.model import Directory
from telephony.outage import ModeState

log = logging.getLogger("backline.controller")

MODE_POLL_SECONDS = 1.0


class Controller:
    """Keeps the mode the journal records in view and reports each change once."""

    def __init__(self, directory: Directory, journal: Journal) -> None:
        self.directory = directory
        self.journal = journal
        self.mode: ModeState = journal.mode_state()

    async def watch_mode(self, stop: asyncio.Event) -> None:
        """Pick up switches made elsewhere (CLI, console) within a second."""
        while not stop.is_set():
            try:
                state = await asyncio.to_thread(self.journal.mode_state)
            except JournalError as exc:
                log.error("cannot read the mode from the journal: %s", exc)
            else:
                if state != self.mode:
                    self.mode = state
                    since = state.since
                    log.warning("mode is now %s (by %s via %s%s)", state.mode.value,
                                since.by if since else "-", since.via.value if since else "-",
                                f": {since.reason}" if since and since.reason else "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MODE_POLL_SECONDS)


async def _serve(directory: Directory, with_pbx: bool) -> int:
    journal = await asyncio.to_thread(open_journal, directory.connections.storage.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    controller = Controller(directory, journal)
    try:
        watcher = asyncio.create_task(controller.watch_mode(stop))
        log.info("%s: mode %s", directory.practice.name, controller.mode.mode.value)
        if with_pbx:
            log.warning("this version runs the controller without a PBX")
        print(f"ready: {directory.practice.name}: mode {controller.mode.mode.value}; "
              "Ctrl-C stops", flush=True)
        await stop.wait()
        await watcher
        return 0
    finally:
        journal.close()


def run_controller(directory: Directory, *, with_pbx: bool) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(directory, with_pbx))
