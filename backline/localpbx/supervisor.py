"""A process this program supervises: started in a session of its own (so it leads a process
group whose leftovers can be killed with it), or adopted from an earlier run, and watched and
signalled through a pidfd: never by name, never by a PID that could have been reused."""

from __future__ import annotations

import os
import select
import signal
import subprocess
from typing import IO


class SupervisedProcess:
    """At most one process at a time: launch() or adopt() it, then stop() or kill() it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        # Started by an earlier process (adopt()): not our child, so it is watched and
        # signalled through its pidfd alone.
        self._adopted: int | None = None

    @property
    def held(self) -> bool:
        """True once launched or adopted, until stopped or killed."""
        return self._proc is not None or self._adopted is not None

    @property
    def pid(self) -> int | None:
        """PID of the process held, or None."""
        if self._adopted is not None:
            return self._adopted
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process held has not exited."""
        # Not Popen.poll(): that would reap it, and _reap() relies on the unreaped PID to
        # kill its process group safely.
        return self.held and self._pidfd is not None and not self.wait_exit(0)

    @property
    def pidfd(self) -> int:
        """Readable once the process has exited (for select() beside other files)."""
        assert self._pidfd is not None
        return self._pidfd

    def launch(self, argv: list[str], output: IO[bytes], umask: int) -> None:
        """Start ``argv`` in a new session (its own process group), stdout and stderr to
        ``output``, stdin closed."""
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=umask,
        )
        self._pidfd = os.pidfd_open(self._proc.pid)

    def adopt(self, pid: int) -> None:
        """Hold a process another process started: stop() and kill() then end it as if
        launch() had started it."""
        self._pidfd = os.pidfd_open(pid)
        self._adopted = pid

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the process to exit without reaping it; True if it did."""
        assert self._pidfd is not None
        readable, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(readable)

    def _reap(self) -> None:
        """Kill leftovers in the process group, then reap the process.

        Called while the process is an unreaped zombie, so its PID (= the process
        group id) cannot have been reused by someone else's process.
        """
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # no member left
        except PermissionError:
            pass  # a zombie leader with no live members reports EPERM on some kernels
        self._proc.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._proc = None
        self._pidfd = None

    def _end_adopted(self, first: signal.Signals, timeout: float) -> None:
        """Signal an adopted process through its pidfd (never a reused PID), SIGKILL it after
        ``timeout``; its parent (init, since ours died) reaps it."""
        assert self._pidfd is not None
        if not self.wait_exit(0):
            signal.pidfd_send_signal(self._pidfd, first)
            if not self.wait_exit(timeout):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                self.wait_exit(timeout)
        os.close(self._pidfd)
        self._pidfd = None
        self._adopted = None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process, SIGKILL it after `timeout`; return its exit code (None for an
        adopted process, whose exit code goes to its own parent)."""
        if self._adopted is not None:
            self._end_adopted(signal.SIGTERM, timeout)
            return None
        if self._proc is None:
            return None
        proc = self._proc
        if proc.returncode is None and self._pidfd is not None and not self.wait_exit(0):
            proc.send_signal(signal.SIGTERM)
            if not self.wait_exit(timeout):
                proc.send_signal(signal.SIGKILL)
                self.wait_exit(timeout)
        self._reap()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the process and anything in its process group."""
        if self._adopted is not None:
            self._end_adopted(signal.SIGKILL, 10.0)
            return None
        if self._proc is None:
            return None
        proc = self._proc
        if self._pidfd is None:  # pidfd_open failed right after Popen
            proc.kill()
            proc.wait()
            self._proc = None
            return proc.returncode
        if not self.wait_exit(0):
            proc.send_signal(signal.SIGKILL)
            self.wait_exit(10.0)
        self._reap()
        return proc.returncode
