"""The controller process: wires the journal, the mode, the core and the PBX driver.

``run_controller`` owns the event loop and the signals; everything it starts it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import sys

from telephony.conversations import ConversationBook
from telephony.journal import Journal, JournalError, open_journal
from telephony.model import Directory
from telephony.outage import Mode, ModeState
from telephony.ownership import OwnershipBook

log = logging.getLogger("backline.controller")

MODE_POLL_SECONDS = 1.0


class Controller:
    """Holds the practice's state in memory and keeps the mode the journal records in view."""

    def __init__(self, directory: Directory, journal: Journal) -> None:
        self.directory = directory
        self.journal = journal
        self.book = OwnershipBook(directory)
        self.conversations = ConversationBook()
        self.state: ModeState = journal.mode_state()

    def mode(self) -> Mode:
        return self.state.mode

    async def watch_mode(self, stop: asyncio.Event) -> None:
        """Pick up switches made elsewhere (CLI, console) within a second."""
        while not stop.is_set():
            try:
                state = await asyncio.to_thread(self.journal.mode_state)
            except JournalError as exc:
                log.error("cannot read the mode from the journal: %s", exc)
            else:
                if state != self.state:
                    self.state = state
                    since = state.since
                    log.warning("mode is now %s (by %s via %s%s)", state.mode.value,
                                since.by if since else "-", since.via.value if since else "-",
                                f": {since.reason}" if since and since.reason else "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MODE_POLL_SECONDS)


def instance_name(directory: Directory) -> str:
    """One local Asterisk per config file, so two practices' `up` never share a tree."""
    return "up-" + hashlib.sha256(directory.source.encode()).hexdigest()[:10]


async def _serve(directory: Directory, *, start_pbx: bool) -> int:
    from telephony.asterisk.driver import AsteriskDriver
    from telephony.asterisk.local_pbx import asterisk_pbx, prepare, read_secret

    journal = await asyncio.to_thread(open_journal, directory.connections.storage.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    controller = Controller(directory, journal)
    pbx = asterisk_pbx(directory)
    local = None
    driver = None
    try:
        if start_pbx:
            from telephony.asterisk.pbxroot import ensure_root

            root = await asyncio.to_thread(ensure_root)
            local = await asyncio.to_thread(prepare, directory, instance_name(directory),
                                            root=root)
            await asyncio.to_thread(local.instance.start)
            log.info("Asterisk started (pid %s), SIP on %s", local.instance.pid, pbx.sip)
        driver = AsteriskDriver(pbx, read_secret(pbx.ami_secret, "connections.pbx.ami"),
                                controller.book, controller.conversations, controller.mode)
        await driver.start()
        watcher = asyncio.create_task(controller.watch_mode(stop))
        print(f"ready: {directory.practice.name}: mode {controller.mode().value}; SIP on "
              f"{pbx.sip}, FastAGI on {pbx.agi}; Ctrl-C stops", flush=True)
        await stop.wait()
        await watcher
        return 0
    finally:
        if driver is not None:
            await driver.stop()
        if local is not None:
            await asyncio.to_thread(local.instance.stop)
        journal.close()


def run_controller(directory: Directory, *, start_pbx: bool) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(directory, start_pbx=start_pbx))
