"""The controller's log never holds up a call (backline/app/log_output.py).

`backline run` on the real Asterisk with its output going to a pipe that nobody reads: SIPp's
calls are still decided by the controller (the PBX's fail-safe never answers one), and once
the reader comes back every decision's line is there, in order.  Without the log's own
writer thread the first decision's line blocked the event loop on the full pipe, and every
call after it waited for a decision that never came.  And the handler alone: a bounded
number of lines waits for a stalled stream, the rest are counted, and what is queued at exit
is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backline.app.log_output import BatchedStream
from backline.pbx.asterisk.dialplan_variables import FAILSAFE_EVENT
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import place_calls

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "+13125559999"  # decided by the controller: a polite refusal
CALLS = 20
DECISION = "inbound call from"


def fill(fd: int) -> int:
    """Write into the pipe ``fd`` until it holds no more; the bytes written."""
    os.set_blocking(fd, False)
    written = 0
    try:
        while True:
            written += os.write(fd, b"#" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return written


def read_until(fd: int, needle: bytes, count: int, within: float) -> bytes:
    """What the pipe ``fd`` yields until ``needle`` was seen ``count`` times (or EOF, or
    ``within`` seconds passed)."""
    got = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + within
    while got.count(needle) < count and time.monotonic() < deadline:
        if sel.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            got += chunk
    return got


def run_controller(config: Path, output: int, notify: Path) -> subprocess.Popen[bytes]:
    """``backline run CONFIG`` as systemd runs it (``Type=notify``), its output to ``output``."""
    return subprocess.Popen(
        [sys.executable, "-m", "backline.app.cli", "run", str(config)], cwd=ROOT,
        stdout=output, stderr=output, stdin=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": str(notify)})


@pytest.mark.asterisk
async def test_calls_are_decided_while_nobody_reads_the_controller_s_log(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "log-stall", controller_in_process=False) as pbx:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(60)
        reader, writer = os.pipe()
        controller = run_controller(pbx.config_path, writer, tmp_path / "notify")
        try:
            # Its startup lines are read: only the calls' lines meet a stalled reader.
            ready = await asyncio.to_thread(notify.recv, 4096)
            assert ready.startswith(b"READY=1"), ready
            await asyncio.to_thread(read_until, reader, b"ready", 1, 30)
            # The reader stalls: the pipe is full, and stays full while the calls come.
            assert fill(writer) > 0
            callers = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, UNKNOWN,
                                  from_user="carrier", calls=CALLS, timeout=60)
            result = await asyncio.to_thread(callers.wait, 90)
            assert result.ok and result.successful == CALLS, callers.describe()
            assert not [e for e in pbx.events.named("UserEvent")
                        if e.get("UserEvent") == FAILSAFE_EVENT]
            # The reader comes back: every decision's line follows the filler.
            os.close(writer)
            writer = -1
            out = await asyncio.to_thread(read_until, reader, DECISION.encode(), CALLS, 30)
            lines = out.lstrip(b"#").decode().splitlines()
            assert len([line for line in lines if DECISION in line]) == CALLS, lines[-30:]
        finally:
            controller.terminate()
            try:
                controller.wait(30)
            except subprocess.TimeoutExpired:
                controller.kill()
                controller.wait(30)
            if writer != -1:
                os.close(writer)
            os.close(reader)
            notify.close()


@contextlib.contextmanager
def logged_to(handler: BatchedStream, name: str) -> Iterator[logging.Logger]:
    """A logger of its own writing through ``handler`` (bare messages); closed after."""
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"test_log_output.{name}")
    log.propagate = False
    log.addHandler(handler)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()


def test_a_stalled_stream_keeps_a_bounded_number_of_lines_and_counts_the_rest() -> None:
    reader, writer = os.pipe()
    stream = os.fdopen(writer, "w")
    fill(writer)
    # Lingering until flushed: every line below meets the same queue.
    handler = BatchedStream(stream, linger=3600, max_queued=5)
    try:
        with logged_to(handler, "stalled") as log:
            for i in range(8):
                log.warning("line %d", i)
            flushed = threading.Thread(target=handler.flush)
            flushed.start()
            out = read_until(reader, b"dropped", 1, 30)
            flushed.join(30)
            assert not flushed.is_alive()
            lines = out.lstrip(b"#").decode().splitlines()
            assert lines == [f"line {i}" for i in range(5)] + [
                "3 log line(s) dropped: the log's reader fell behind"]
    finally:
        stream.close()
        os.close(reader)


def test_lines_still_queued_at_exit_are_written() -> None:
    program = ("import logging, sys\n"
               "from backline.app.log_output import BatchedStream\n"
               "logging.basicConfig(level=logging.INFO, handlers=[BatchedStream(sys.stderr)],"
               " format='%(message)s')\n"
               "for i in range(100): logging.getLogger('x').info('line %d', i)\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stderr.splitlines() == [f"line {i}" for i in range(100)]


class FailsOnce:
    """A stream whose first write fails as a closed file's does, then takes lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = False
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise ValueError("I/O operation on closed file.")
        self.lines.extend(text.splitlines())
        self.wrote.set()
        return len(text)

    def flush(self) -> None:
        pass


def test_a_write_failing_while_stderr_is_closed_does_not_end_the_writer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's error report goes to sys.stderr; closed, as the log's stream often is
    when it fails, that report raises too.  The writer lives on: the next line is written."""
    closed = open(os.devnull, "w")  # noqa: SIM115 - closed at once, as stderr would be
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    stream = FailsOnce()
    handler = BatchedStream(stream, linger=0)  # type: ignore[arg-type]
    with logged_to(handler, "fails_once") as log:
        log.warning("lost with the failed write")
        handler.flush()
        assert stream.failed
        log.warning("written after it")
        assert stream.wrote.wait(30)
        assert stream.lines == ["written after it"]


def test_a_reader_stalled_at_exit_holds_the_flush_no_longer_than_its_limit() -> None:
    """logging.shutdown flushes at exit: a reader that never comes back must not keep the
    controller (and its restart) waiting for systemd's kill."""
    reader, writer = os.pipe()
    stream = os.fdopen(writer, "w")
    fill(writer)
    handler = BatchedStream(stream, linger=0, flush_limit=0.2)
    try:
        with logged_to(handler, "stalled_exit") as log:
            log.warning("never read")
            flushed = threading.Thread(target=handler.flush)
            flushed.start()
            flushed.join(30)
            assert not flushed.is_alive()
    finally:
        os.close(reader)  # the writer's blocked write now fails, and it ends
        with contextlib.suppress(OSError):
            stream.close()
