"""The controller's log, written by a thread of its own, a batch of lines at a time.

A line written from the event loop is a system call on every call's path: `python -m
bench.outage` (py-spy on the controller at 225 calls a second, outage engaged) found the loop
10-16% of its time in the one line each decision logs (the write, the reader it wakes, the
interpreter lock it gives up and waits for again), while Asterisk's FastAGI connections
waited for the loop to accept them.  And a log whose reader stalls (a full pipe, a journald
that is behind) would stop the loop, and every call with it, until the reader came back.

Here a line is queued (the message formatted at once, so that it says what was true when it
was logged) and a writer thread writes what has gathered in one write, ``LINGER`` seconds
after the first line of a batch.  The loop never waits on the stream: if the reader stalls,
at most ``MAX_QUEUED`` lines wait, later ones are counted and dropped, and the count is
written once the stream takes lines again.  ``flush`` (and so ``logging.shutdown`` at exit)
writes what is queued before it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

LINGER = 0.05  # s: a line waits at most this long (plus the write) for company
MAX_QUEUED = 10_000  # lines, about 1 MB: past this, lines are dropped and counted
FLUSH_LIMIT = 5.0  # s: at exit, a stalled reader holds the process (and its restart) no longer


class BatchedStream(logging.Handler):
    """Writes formatted records to ``stream`` from its own thread (see the module)."""

    def __init__(self, stream: TextIO, *, linger: float = LINGER,
                 max_queued: int = MAX_QUEUED, flush_limit: float = FLUSH_LIMIT) -> None:
        super().__init__()
        self.stream = stream
        self._linger = linger
        self._flush_limit = flush_limit
        self._max_queued = max_queued
        self._queued: list[logging.LogRecord] = []
        self._dropped = 0
        self._taken = 0  # batches the writer took, and wrote: flush waits on these
        self._written = 0
        self._hurry = False  # someone flushes: no lingering
        self._closing = False
        self._changed = threading.Condition(threading.Lock())
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # As QueueHandler does: the message as of now; the arguments may change later.
            record.msg = record.getMessage()
            record.args = None
        except Exception:
            self.handleError(record)
            return
        with self._changed:
            if len(self._queued) >= self._max_queued:
                self._dropped += 1
                return
            self._queued.append(record)
            if len(self._queued) == 1:
                self._changed.notify_all()

    def flush(self) -> None:
        """Return once every line queued before the call is written, the writer is gone, or
        ``flush_limit`` seconds passed: a reader stalled at exit (``logging.shutdown``) must
        not hold the process, and the service's restart, until systemd kills it."""
        deadline = time.monotonic() + self._flush_limit
        with self._changed:
            wanted = self._taken + (1 if self._queued or self._dropped else 0)
            self._hurry = True
            self._changed.notify_all()
            while self._written < wanted and self._writer.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 1.0))

    def close(self) -> None:
        self.flush()
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        super().close()

    def _pending(self) -> bool:
        return bool(self._queued or self._dropped)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending() or self._closing)
                if not self._pending():
                    return  # closing, and nothing left
                # Company for the first line, unless someone flushes.
                self._changed.wait_for(lambda: self._hurry or self._closing, self._linger)
                batch, self._queued = self._queued, []
                dropped, self._dropped = self._dropped, 0
                self._hurry = False
                self._taken += 1
            self._write(batch, dropped)
            with self._changed:
                self._written += 1
                self._changed.notify_all()

    def _write(self, batch: list[logging.LogRecord], dropped: int) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(self.format(record) + "\n")
            except Exception:
                self.handleError(record)
        if dropped:
            lines.append(f"{dropped} log line(s) dropped: the log's reader fell behind\n")
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            # handleError prints to sys.stderr, often this very stream: closed, it raises
            # ValueError, which would end the writer and every line after this batch.
            try:
                if batch:
                    self.handleError(batch[-1])
            except Exception:  # nowhere left to say it
                pass
