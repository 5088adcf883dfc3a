"""A controller process for the texting tests: ``python -m tests.texting_runner CONFIG``.

The real :class:`~backline.app.controller.Controller` without a PBX, serving its public and
status listeners on the config's addresses as ``backline run`` does.  Prints ``ready`` once
they listen; the tests SIGKILL it while a text is on its way to the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from backline.app import config
from backline.app.controller import Controller
from backline.journal import open_journal


async def main(path: str) -> int:
    directory = config.load(path).directory
    journal = open_journal(directory.connections.storage.url)
    controller = Controller(directory, journal)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    runners = []
    pages, status = directory.connections.pages, directory.connections.status
    assert pages is not None and status is not None
    for app, where in ((controller.web_app(), pages.listen),
                       (controller.status_app(), status.listen)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, where.host, where.port).start()
        runners.append(runner)
    watcher = asyncio.create_task(controller.keep_mode(stop))
    print("ready", flush=True)
    await stop.wait()
    await watcher
    for runner in runners:
        await runner.cleanup()
    await controller.close()
    journal.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(sys.argv[1])))
