"""A controller process for the inbox tests: ``python -m tests.inbox_runner CONFIG``.

The real :class:`~backline.app.controller.Controller` (journal, mode polling, inbox drain, email
intake) without a PBX, with a short retry backoff so a 30%-failing inbox drains in seconds.
Prints ``ready`` once started and ``drained`` when the drain first finds nothing left; the
tests SIGKILL it at an arbitrary moment and start another on the same journal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from backline.app import config
from backline.app.controller import Controller
from backline.features.sending.retry import Backoff
from backline.journal import open_journal

FAST = Backoff(first=0.01, cap=0.2)


async def main(path: str) -> int:
    directory = config.load(path).directory
    journal = open_journal(directory.connections.storage.url)
    controller = Controller(directory, journal)
    assert controller.inbox is not None, "the config names no inbox"
    controller.inbox.backoff = FAST
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    watcher = asyncio.create_task(controller.keep_mode(stop))
    print("ready", flush=True)

    async def report() -> None:
        assert controller.inbox is not None
        await controller.inbox.drained(within=3600)
        print("drained", flush=True)

    reporter = asyncio.create_task(report())
    await stop.wait()
    reporter.cancel()
    await watcher
    await controller.close()
    journal.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(sys.argv[1])))
