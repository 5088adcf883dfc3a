"""inotify on one directory, through the few libc calls it takes (the stdlib has none)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Self


class DirectoryWatch:
    """inotify on one directory: sleep until a file in it is created or written.

    start() uses it to wait for Asterisk's log, the SIPp harness for message
    logs; both check their condition, then select() on this instead of polling.
    The stdlib has no inotify; these are the few libc calls we need via ctypes.
    """

    _IN_MODIFY = 0x002
    _IN_CREATE = 0x100

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._fd = fd
        mask = self._IN_MODIFY | self._IN_CREATE
        if int(libc.inotify_add_watch(fd, os.fsencode(directory), mask)) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}")

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        """Consume queued events; we only care that *something* changed."""
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
