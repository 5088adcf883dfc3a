"""``backline run`` as ops run it, in a process of its own, for bench.outage: its output read
by a thread (a chatty controller never blocks on a full pipe), a line waited for, SIGKILL; and
``backline`` subcommands run against the same practice."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

from backline.localpbx.ports import LOOPBACK
from bench.pbx_setup import BenchError

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 60.0


class ControllerProcess:
    """``backline run CONFIG`` in a process of its own; its output goes to ``log`` and is
    read by a thread, so a test can wait for a line (and a chatty controller never blocks
    on a full pipe)."""

    def __init__(self, config_path: Path, log: Path, tree: Path = ROOT) -> None:
        """``tree``: the source tree whose ``backline`` runs (another commit's, for
        bench/outage_cpu.py's before and after)."""
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backline.app.cli", "run", str(config_path)], cwd=tree,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="controller-output",
                                        daemon=True)
        self._reader.start()

    def __enter__(self) -> ControllerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = READY_SECONDS) -> str:
        """The first output line containing ``needle``; BenchError if the process ends or
        ``timeout`` passes first."""
        def found() -> str | None:
            return next((line for line in self._lines if needle in line), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._ended, timeout)
            line = found()
            if line is None:
                tail = "".join(self._lines[-20:])
                raise BenchError(f"the controller did not print {needle!r}:\n{tail}")
            return line

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, the FastAGI port closed by the kernel."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        self._log.close()


def backline(config_path: Path, *args: str) -> None:
    """Run a ``backline`` subcommand on the practice; BenchError unless it exits 0."""
    result = subprocess.run([sys.executable, "-m", "backline.app.cli", *args, "--config",
                             str(config_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise BenchError(f"backline {' '.join(args)} (exit {result.returncode}): "
                         f"{result.stdout.strip()} {result.stderr.strip()}")


def agi_refuses(port: int) -> bool:
    """True if nothing listens on the FastAGI port any more."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
