"""``backline`` as ops run it, in a subprocess whose output lines tests wait on.

Read unbuffered: select() says only what the pipe holds, so no line may wait in a Python
buffer (a buffered readline took several lines at once, and a test then waited out its
deadline with "ready" already read).
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.harness.practice_pbx import PracticePbx

ROOT = Path(__file__).resolve().parent.parent.parent


class BacklineProcess:
    """``backline ARGS…``; its stdout and stderr kept as lines.  ``nofile``: the process's
    (soft, hard) descriptor limit, as ``ulimit -Sn``/``-Hn`` would set it."""

    def __init__(self, *args: str, nofile: tuple[int, int] | None = None,
                 argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 ) -> None:
        """``argv``: the whole command line instead (a unit's ExecStart); ``env``: the
        environment instead of this process's."""
        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        command = [sys.executable, "-m", "backline.app.cli", *args] if argv is None \
            else list(argv)
        self.proc = subprocess.Popen(command, env=env,
                                     cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, bufsize=0,
                                     preexec_fn=limit if nofile is not None else None)
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(self, needle: str, timeout: float, count: int = 1) -> str:
        """The ``count``-th output line containing ``needle``, reading on until it comes."""
        seen = 0
        for line in self.lines:
            if needle in line:
                seen += 1
                if seen == count:
                    return line
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sel.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace") + "\n"
                self.lines.append(line)
                if needle in line:
                    seen += 1
                    if seen == count:
                        return line
        raise AssertionError(f"{needle!r} not seen {count} time(s) within {timeout}s:\n"
                             + "".join(self.lines[-30:]))

    def finish(self, timeout: float) -> str:
        """All the output until the process exits."""
        self.proc.wait(timeout)
        with pytest.raises(AssertionError):
            self.wait_for("\0never printed\0", 30)  # reads on to the end of its output
        return "".join(self.lines)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self, kill: bool = False) -> None:
        self.signal(signal.SIGKILL if kill else signal.SIGTERM)


class ControllerProcess(BacklineProcess):
    """``backline run`` on the test practice, once it has said ``ready``."""

    def __init__(self, p: PracticePbx, *, nofile: tuple[int, int] | None = None) -> None:
        super().__init__("run", str(p.config_path), nofile=nofile)
        self.wait_for("ready", 60)
