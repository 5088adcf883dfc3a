"""One Asterisk process running from the Debian root, with its own config tree.

Each instance lives in `/srv/backline-NAME/{etc,run,log,spool,lib,cache}`
inside the root, so several run side by side (pytest-xdist workers, a test's
"primary" and "fail-over" PBX) with separate ports, control sockets, astdb and
logs.  The instance writes the files that encode *where* and *on which ports*
it runs (backline/localpbx/instance_files.py); what it *does* (pjsip.conf,
extensions.conf, manager.conf, ...) is rendered elsewhere and handed in as text.
Its ports are an AsteriskPorts (backline/localpbx/ports.py); start() waits on
its log through inotify (backline/localpbx/inotify.py), never by polling.

Processes are tracked by PID (and the process group Asterisk leads), never by
name: other instances and other people's Asterisks share the machine.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Self

from backline.localpbx.inotify import DirectoryWatch
from backline.localpbx.instance_files import (
    INSTANCE_DIRS,
    LOG_FILE,
    check_handed_in,
    module_dir,
    owned_files,
)
from backline.localpbx.pbxroot import ASTERISK, default_root
from backline.localpbx.ports import LOOPBACK, AsteriskPorts
from backline.localpbx.supervisor import SupervisedProcess

READY_LINE = b"Asterisk Ready."
AMI_BANNER = b"Asterisk Call Manager/"
CONSOLE_FILE = "console.log"  # Asterisk's own stdout/stderr: crashes, early errors

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AsteriskError(Exception):
    """An instance could not be started, stopped or commanded."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"asterisk {name}: {detail}")
        self.name = name
        self.detail = detail


class AsteriskStartError(AsteriskError):
    """Asterisk exited, or AMI did not answer, during start(); carries the log tail."""

    def __init__(self, name: str, detail: str, log_tail: str) -> None:
        super().__init__(name, f"{detail}\n--- log tail ---\n{log_tail}")
        self.log_tail = log_tail


class AsteriskCliError(AsteriskError):
    """`asterisk -rx COMMAND` failed; carries the command and its output."""

    def __init__(self, name: str, command: str, returncode: int, output: str) -> None:
        super().__init__(name, f"`{command}` exited {returncode}: {output.strip()}")
        self.command = command
        self.returncode = returncode
        self.output = output


def read_ami_banner(host: str, port: int, timeout: float) -> str:
    """Connect to AMI and return its banner line; raise OSError if it is not AMI."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line.startswith(AMI_BANNER):
        raise OSError(errno.EPROTO, f"not an AMI banner: {line!r}")
    return line.decode("ascii", "replace")


class AsteriskInstance:
    """An Asterisk process with its own tree inside the root.

    `files` maps file names in the instance's etc dir to their text
    (pjsip.conf, extensions.conf, manager.conf, ...).  manager.conf must enable
    AMI on `bind` and `ports.ami` (start() waits for the AMI banner), and
    extensions.conf must exist: modules.conf *requires* pbx_config, which
    declines without it, so a missing dialplan stops Asterisk at start.
    """

    def __init__(
        self,
        name: str,
        ports: AsteriskPorts,
        files: Mapping[str, str] | None = None,
        *,
        root: Path | None = None,
        bind: str = LOOPBACK,
        verbose: int = 3,
        systemname: str = "",
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"instance name must match {_NAME.pattern}: {name!r}")
        if systemname and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", systemname):
            raise ValueError(f"systemname: lower-case letters, digits and '-': {systemname!r}")
        self.name = name
        # Prefixes every uniqueid ("node1-1700000000.1"): nodes sharing a journal never
        # produce the same attempt key.
        self.systemname = systemname
        self.ports = ports
        self.root = (root or default_root()).absolute()
        self.bind = bind
        self.verbose = verbose
        self.home = PurePosixPath("/srv") / f"backline-{name}"  # as Asterisk sees it
        self._files: dict[str, str] = {}
        self._process = SupervisedProcess()
        self._log_offsets: dict[Path, int] = {}
        self.set_files(files or {}, write=False)

    # ----- paths

    def host_path(self, inside: PurePosixPath | str) -> Path:
        """Where a path inside the root is on the host."""
        return self.root / str(inside).lstrip("/")

    def dir(self, kind: str) -> PurePosixPath:
        """The instance's etc/run/log/spool/lib/cache dir, as Asterisk sees it."""
        return self.home / kind

    @property
    def config_path(self) -> PurePosixPath:
        """asterisk.conf, as passed to `asterisk -C`."""
        return self.dir("etc") / "asterisk.conf"

    @property
    def log_path(self) -> Path:
        """The instance's log file on the host."""
        return self.host_path(self.dir("log") / LOG_FILE)

    @property
    def _console_path(self) -> Path:
        return self.host_path(self.dir("log") / CONSOLE_FILE)

    # ----- configuration

    def set_files(self, files: Mapping[str, str], *, write: bool = True) -> None:
        """Replace the rendered config files (write them now unless write=False)."""
        check_handed_in(files)
        self._files = dict(files)
        if write:
            self.write_config()

    def write_config(self) -> None:
        """Create the instance tree and write every config file into etc/."""
        if not self.host_path(ASTERISK).is_file():
            raise AsteriskError(
                self.name,
                f"no Asterisk root at {self.root}: run `python -m backline.localpbx.pbxroot`",
            )
        for kind in INSTANCE_DIRS:
            self.host_path(self.dir(kind)).mkdir(parents=True, exist_ok=True)
        # Received faxes (spool) and call records and logs (caller numbers) are patient data.
        for kind in ("spool", "log"):
            os.chmod(self.host_path(self.dir(kind)), 0o700)
        etc = self.host_path(self.dir("etc"))
        # etc/ holds the phones' SIP secrets and the AMI secret: readable by Asterisk (this
        # user) only, every file 0600 from its first byte (no world-readable window).
        os.chmod(etc, 0o700)
        owned = owned_files(self.home, module_dir(self.root), self.ports, self.verbose,
                            self.systemname)
        for fname, text in {**owned, **self._files}.items():
            fd = os.open(etc / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o600)
            os.fchmod(fd, 0o600)  # an existing file (an older tree's 0644) keeps its mode
            with os.fdopen(fd, "w") as out:
                out.write(text)

    # ----- process

    @property
    def pid(self) -> int | None:
        """PID of the running Asterisk, or None."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the process started by start() (or adopted) has not exited."""
        return self._process.running

    def find_running(self) -> int | None:
        """The PID of an Asterisk running this instance (started by another process, e.g. a
        `backline up` that was killed), or None.

        It is a process running Asterisk with this instance's asterisk.conf inside this root:
        the one the instance's PID file names, else (the PID file was deleted) any such
        process.  A PID file left by a dead Asterisk whose PID was reused does not count.
        """
        try:
            named = [int(self.host_path(self.dir("run") / "asterisk.pid").read_text().strip())]
        except (OSError, ValueError):
            named = []
        try:
            others = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            others = []
        for pid in named + others:
            if self._runs_here(pid):
                return pid
        return None

    def _runs_here(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv or not os.path.basename(argv[0]).startswith(b"asterisk"):
                return False
            return os.fsencode(str(self.config_path)) in argv \
                and os.path.samefile(f"/proc/{pid}/root", self.root)
        except OSError:
            return False

    def adopt(self, pid: int) -> None:
        """Take over an Asterisk of this instance that another process started (find_running):
        stop() and kill() then end it as if start() had started it."""
        if self._process.held:
            raise AsteriskError(self.name, f"already holds an Asterisk (pid {self.pid})")
        self._process.adopt(pid)

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, launch Asterisk and wait until AMI sends its banner.

        Raises AsteriskStartError (with the log tail) if Asterisk exits, or
        does not become ready with AMI answering within `timeout` seconds.
        """
        if self._process.held:
            raise AsteriskError(self.name, f"already started (pid {self.pid})")
        running = self.find_running()
        if running is not None:  # its control socket must not be deleted below
            raise AsteriskError(self.name, f"already running (pid {running}, started by "
                                "another process): adopt() it or stop it first")
        self.write_config()
        log_dir = self.host_path(self.dir("log"))
        # Earlier runs' lines (their "Asterisk Ready." too) are not this run's.
        self._log_offsets = {}
        for path in (self.log_path, self._console_path):
            path.touch()
            self._log_offsets[path] = path.stat().st_size
        # A stale pid file or control socket from a killed run is harmless to
        # Asterisk but would let `asterisk -rx` talk to nothing: clear them.
        for stale in ("asterisk.ctl", "asterisk.pid"):
            self.host_path(self.dir("run") / stale).unlink(missing_ok=True)
        watch = DirectoryWatch(log_dir)  # before launching, so no write goes unseen
        ready = False
        try:
            with open(self._console_path, "ab") as console:
                # chroot(1) execs Asterisk, so this PID is Asterisk's own; the
                # new session makes it a process group leader for kill().
                # umask 077: what Asterisk writes (a received fax in the spool, the call
                # records, the logs) is patient data, readable by root alone.
                self._process.launch(
                    ["chroot", str(self.root), ASTERISK, "-f", "-n", "-C", str(self.config_path)],
                    console, umask=0o077)
            self._wait_ready(watch, time.monotonic() + timeout)
            ready = True
        finally:
            watch.close()
            if not ready:  # also on KeyboardInterrupt: a half-started Asterisk must go
                self.kill()

    def _wait_ready(self, watch: DirectoryWatch, deadline: float) -> None:
        pidfd = self._process.pidfd
        while not self._log_says_ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsteriskStartError(
                    self.name, "not ready before the start timeout", self.log_tail()
                )
            readable, _, _ = select.select([watch.fileno(), pidfd], [], [], remaining)
            if pidfd in readable:
                raise AsteriskStartError(
                    self.name, "exited during start-up (see log)", self.log_tail()
                )
            watch.drain()
        try:
            read_ami_banner(self.bind, self.ports.ami, max(deadline - time.monotonic(), 1.0))
        except OSError as exc:
            raise AsteriskStartError(
                self.name,
                f"Asterisk is up but AMI on {self.bind}:{self.ports.ami} did not answer ({exc}); "
                "does manager.conf enable it there?",
                self.log_tail(),
            ) from exc

    def _read_log(self, path: Path) -> bytes:
        """What this run (since start()) wrote to one of the instance's logs."""
        try:
            with open(path, "rb") as log:
                log.seek(self._log_offsets.get(path, 0))
                return log.read()
        except FileNotFoundError:
            return b""

    def _log_says_ready(self) -> bool:
        return READY_LINE in self._read_log(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote to the instance's log and console, for errors."""
        parts = []
        for path in (self.log_path, self._console_path):
            tail = self._read_log(path).decode(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"[{path.name}]\n" + "\n".join(tail))
        return "\n".join(parts) or "(no log output)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM Asterisk, SIGKILL it after `timeout`; return its exit code (None for an
        adopted Asterisk, whose exit code goes to its own parent)."""
        return self._process.stop(timeout)

    def kill(self) -> int | None:
        """SIGKILL Asterisk and anything in its process group (crash tests)."""
        return self._process.kill()

    def remove(self) -> None:
        """Delete the instance tree (config, logs, astdb); only when stopped."""
        if self.running:
            raise AsteriskError(self.name, "remove() while running")
        shutil.rmtree(self.host_path(self.home), ignore_errors=True)

    # ----- control

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Run an Asterisk CLI command through the control socket; return its output.

        Raises AsteriskCliError if `asterisk -rx` fails (not running, no
        socket) or Asterisk does not know the command.
        """
        try:
            done = subprocess.run(
                [*self._remote_argv(), "-rx", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AsteriskCliError(self.name, command, -1, f"timed out after {timeout} s") from exc
        if done.returncode != 0:
            raise AsteriskCliError(self.name, command, done.returncode, done.stderr + done.stdout)
        # `-rx` exits 0 for an unknown command; the text is the only sign.
        if done.stdout.startswith("No such command"):
            raise AsteriskCliError(self.name, command, done.returncode, done.stdout)
        return done.stdout

    def _remote_argv(self) -> list[str]:
        return ["chroot", str(self.root), ASTERISK, "-C", str(self.config_path)]

    def console_argv(self, command: str | None = None) -> list[str]:
        """``asterisk -r`` on this instance's control socket (``-rx COMMAND`` with one)."""
        return [*self._remote_argv(), *(["-rx", command] if command is not None else ["-r"])]

    def reload(self, module: str | None = None) -> str:
        """Rewrite the config files and reload one module (or everything)."""
        self.write_config()
        return self.cli(f"module reload {module}" if module else "core reload")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AsteriskInstance({self.name!r}, pid={self.pid}, ports={self.ports})"


__all__ = [
    "AsteriskCliError",
    "AsteriskError",
    "AsteriskInstance",
    "AsteriskStartError",
    "read_ami_banner",
]
