"""Inbox drain throughput: held items per second delivered to a local inbox server.

``.venv/bin/python -m bench.drain [--items 10000] [--fail-rate 0.0]``

Records ``--items`` held items in an outage (the tests' mix: calls, SMS, faxes with a small
PDF, emails) in a fresh SQLite journal, ends the outage and times the real controller's drain
until the test inbox (``tests/harness/inbox_server.py``, filing each item in SQLite) holds
them all.
Each item is one POST and one fsynced journal commit, in order, one at a time: order is the
contract, so there is no parallelism to buy throughput with.  Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

from backline.app.controller import Controller
from backline.core.outage import Mode, Via
from backline.features.email_intake import EmailIntakeFeature
from backline.features.sending.retry import Backoff
from tests.harness.alert_site import free_port
from tests.harness.inbox_server import InboxServer
from tests.test_inbox_delivery import TOKEN, Practice, engage, practice_yaml, seed


async def run(items: int, fail_rate: float) -> float:
    """Held items per second delivered (printed with the rest); raises AssertionError if
    the inbox did not get each item once."""
    # The token only while this bench runs: `python -m bench` runs it in its own process,
    # tests/test_bench.py in a pytest worker whose later tests must not inherit it.
    with mock.patch.dict(os.environ, {"BACKLINE_INBOX_TOKEN": TOKEN}):
        return await _run(items, fail_rate)


async def _run(items: int, fail_rate: float) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="backline-drain-bench-"))
    inbox = InboxServer(tmp / "inbox.db", fail_rate=fail_rate, token=TOKEN)
    await inbox.start()
    try:
        p = Practice(tmp, practice_yaml(tmp, inbox.url, free_port()), inbox, 0)
        journal = p.journal()
        engage(journal, Mode.OUTAGE)
        started = time.perf_counter()
        seed(journal, tmp, items)
        recorded = time.perf_counter() - started
        journal.close()
        # The email listener is not what is measured: it is left unstarted.
        directory = p.directory()
        controller = Controller(directory, p.journal())
        controller.features = [f for f in controller.features
                               if not isinstance(f, EmailIntakeFeature)]
        assert controller.inbox is not None
        controller.inbox.backoff = Backoff(first=0.01, cap=0.2)
        await controller.start()
        started = time.perf_counter()
        await controller.switch(Mode.NORMAL, by="bench", via=Via.CLI, reason="")
        await inbox.wait_for(items, within=3600)
        await controller.inbox.drained(within=600)
        elapsed = time.perf_counter() - started
        await controller.close()
        controller.journal.close()
        filed = inbox.count()
        print(f"items: {items} ({filed} filed, each once: {len(set(inbox.keys())) == filed})")
        print(f"recording held items: {items / recorded:,.0f} items/s (one fsync each)")
        print(f"drain: {items / elapsed:,.1f} items/s ({elapsed:.1f} s for {items}), "
              f"inbox fail rate {fail_rate:.0%}, {inbox.requests} requests")
        assert filed == items == len(set(inbox.keys())), (filed, items)
        return items / elapsed
    finally:
        await inbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.items, args.fail_rate))

if __name__ == "__main__":
    main()
