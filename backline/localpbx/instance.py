"""One Asterisk process running from the Debian root, with its own config tree.

Each instance lives in `/srv/backline-NAME/{etc,run,log,spool,lib,cache}`
inside the root, so several run side by side (pytest-xdist workers, a test's
"primary" and "fail-over" PBX) with separate ports, control sockets, astdb and
logs.  The instance writes the files that encode *where* and *on which ports*
it runs (asterisk.conf, logger.conf, rtp.conf, udptl.conf) and the module
list; what it *does* (pjsip.conf, extensions.conf, manager.conf, ...) is
rendered elsewhere and handed in as text.

Processes are tracked by PID (and the process group Asterisk leads), never by
name: other instances and other people's Asterisks share the machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Self

from backline.localpbx.pbxroot import ASTERISK, default_root
from backline.render.asterisk import cdr_conf
from backline.render.modules import modules_conf

LOOPBACK = "127.0.0.1"
READY_LINE = b"Asterisk Ready."
AMI_BANNER = b"Asterisk Call Manager/"
LOG_FILE = "messages.log"
SECURITY_LOG_FILE = "security.log"
CONSOLE_FILE = "console.log"  # Asterisk's own stdout/stderr: crashes, early errors

# Files whose content depends on the instance's directories and ports: a
# renderer handing one of these in would silently break isolation.
OWNED_FILES = frozenset({"asterisk.conf", "logger.conf", "rtp.conf", "udptl.conf"})
# Written empty (or, for modules.conf, from backline.render.modules) unless the
# caller hands in its own: they only silence "cannot load X.conf" errors.
DEFAULT_FILES = ("cdr.conf", "cel.conf", "features.conf", "acl.conf", "ccss.conf",
                 "pjproject.conf", "res_fax.conf")  # fmt: skip
# US tones (Asterisk's sample): without a default country, Asterisk logs a
# warning and has no busy/congestion/ring tones to play in-band.
INDICATIONS_CONF = """\
[general]
country = us

[us]
description = United States / North America
ringcadence = 2000,4000
dial = 350+440
busy = 480+620/500,0/500
ring = 440+480/2000,0/4000
congestion = 480+620/250,0/250
callwaiting = 440/300,0/10000
dialrecall = !350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440
record = 1400/500,0/15000
info = !950/330,!1400/330,!1800/330,0
stutter = !350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440
"""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

# Ranges chosen by on_free_loopback_ports() stay below the kernel's ephemeral
# range (32768+), so they never meet the ports SIPp or a test got from bind(0).
_RTP_SPAN = (10000, 30000)
_UDPTL_SPAN = (30000, 32700)


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


@dataclass(frozen=True)
class AsteriskPorts:
    """Where one instance listens; every port on the instance's bind address."""

    sip: int
    ami: int
    rtp_start: int
    rtp_end: int
    udptl_start: int
    udptl_end: int

    def __post_init__(self) -> None:
        for port in (self.sip, self.ami, self.rtp_start, self.rtp_end,
                     self.udptl_start, self.udptl_end):  # fmt: skip
            if not 1 <= port <= 65535:
                raise ValueError(f"port out of range: {port}")
        if self.rtp_start >= self.rtp_end or self.udptl_start >= self.udptl_end:
            raise ValueError("port range start must be below its end")

    @classmethod
    def on_free_loopback_ports(cls, rtp_width: int = 200, udptl_width: int = 40) -> Self:
        """Pick ports free right now on 127.0.0.1 (for tests and throwaway instances).

        SIP and AMI come from the kernel (bind to port 0).  RTP/UDPTL ranges are
        placed at random below the ephemeral range; two instances' ranges may
        overlap, which is harmless: Asterisk skips a port that is taken.
        """
        sip = _free_port_both()
        ami = _free_tcp_port()
        rtp = random.randrange(_RTP_SPAN[0], _RTP_SPAN[1] - rtp_width, 2)
        udptl = random.randrange(_UDPTL_SPAN[0], _UDPTL_SPAN[1] - udptl_width, 2)
        return cls(sip, ami, rtp, rtp + rtp_width, udptl, udptl + udptl_width)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP by default, or UDP), from the kernel."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def _free_port_both() -> int:
    """A port free for both UDP and TCP (pjsip may add a TCP transport on it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP on loopback")


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        # An Asterisk started by an earlier process (see adopt()): not our child, so it is
        # watched and signalled through its pidfd alone.
        self._adopted: int | None = None
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
        for fname in files:
            if not _FILE_NAME.fullmatch(fname):
                raise ValueError(f"config file name must be a plain file name: {fname!r}")
            if fname in OWNED_FILES:
                raise ValueError(f"{fname} is written by the instance (ports, directories)")
        self._files = dict(files)
        if write:
            self.write_config()

    def base_files(self) -> dict[str, str]:
        """The files the instance owns, rendered for its directories and ports."""
        d = {kind: self.dir(kind) for kind in ("etc", "run", "log", "spool", "lib", "cache")}
        files = {
            "asterisk.conf": (
                "; Rendered by Backline (backline/localpbx/instance.py).\n"
                "[directories]\n"
                f"astetcdir => {d['etc']}\n"
                f"astmoddir => {self._module_dir()}\n"
                f"astvarlibdir => {d['lib']}\n"
                f"astdbdir => {d['lib']}\n"
                f"astkeydir => {d['lib']}\n"
                # Shared, read-only: core sounds and the XML docs the CLI help uses.
                "astdatadir => /usr/share/asterisk\n"
                "astagidir => /usr/share/asterisk/agi-bin\n"
                f"astspooldir => {d['spool']}\n"
                f"astrundir => {d['run']}\n"
                f"astlogdir => {d['log']}\n"
                f"astcachedir => {d['cache']}\n"
                f"astsbindir => {PurePosixPath(ASTERISK).parent}\n"
                "\n[options]\n"
                f"verbose = {self.verbose}\n"
                # Every cli() call is a remote console: do not log each connect.
                "hideconnect = yes\n"
                "astctlpermissions = 0600\n"
                + (f"systemname = {self.systemname}\n" if self.systemname else "")
            ),
            "logger.conf": (
                "[general]\n"
                "dateformat = %F %T.%3q\n"
                "[logfiles]\n"
                # start() waits for "Asterisk Ready." (a verbose message) in this file.
                f"{LOG_FILE} => notice,warning,error,verbose({max(self.verbose, 1)})\n"
                # Failed authentications etc. (res_security_log), for fail2ban.
                f"{SECURITY_LOG_FILE} => security\n"
            ),
            "rtp.conf": (
                f"[general]\nrtpstart = {self.ports.rtp_start}\nrtpend = {self.ports.rtp_end}\n"
            ),
            "udptl.conf": (
                "[general]\n"
                f"udptlstart = {self.ports.udptl_start}\n"
                f"udptlend = {self.ports.udptl_end}\n"
            ),
            "modules.conf": modules_conf(),
            "indications.conf": INDICATIONS_CONF,
        }
        for fname in DEFAULT_FILES:
            files[fname] = ""
        # cdr_csv is a required module and declines an empty cdr.conf.
        files["cdr.conf"] = cdr_conf()
        return files

    def _module_dir(self) -> PurePosixPath:
        """Debian's multiarch module dir inside the root (x86_64-linux-gnu, aarch64-...)."""
        found = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if found:
            return PurePosixPath("/") / found[0].relative_to(self.root)
        return PurePosixPath("/usr/lib/asterisk/modules")

    def write_config(self) -> None:
        """Create the instance tree and write every config file into etc/."""
        if not self.host_path(ASTERISK).is_file():
            raise AsteriskError(
                self.name,
                f"no Asterisk root at {self.root}: run `python -m backline.localpbx.pbxroot`",
            )
        for kind in ("etc", "run", "log", "spool", "lib", "cache"):
            self.host_path(self.dir(kind)).mkdir(parents=True, exist_ok=True)
        # Received faxes (spool) and call records and logs (caller numbers) are patient data.
        for kind in ("spool", "log"):
            os.chmod(self.host_path(self.dir(kind)), 0o700)
        etc = self.host_path(self.dir("etc"))
        for fname, text in {**self.base_files(), **self._files}.items():
            (etc / fname).write_text(text)

    # ----- process

    @property
    def pid(self) -> int | None:
        """PID of the running Asterisk, or None."""
        if self._adopted is not None:
            return self._adopted
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process started by start() (or adopted) has not exited."""
        # Not Popen.poll(): that would reap Asterisk, and _reap() relies on the
        # unreaped PID to kill its process group safely.
        return (self._proc is not None or self._adopted is not None) \
            and self._pidfd is not None and not self._wait_exit(0)

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
        if self._proc is not None or self._adopted is not None:
            raise AsteriskError(self.name, f"already holds an Asterisk (pid {self.pid})")
        self._pidfd = os.pidfd_open(pid)
        self._adopted = pid

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, launch Asterisk and wait until AMI sends its banner.

        Raises AsteriskStartError (with the log tail) if Asterisk exits, or
        does not become ready with AMI answering within `timeout` seconds.
        """
        if self._proc is not None or self._adopted is not None:
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
                self._proc = subprocess.Popen(
                    ["chroot", str(self.root), ASTERISK, "-f", "-n", "-C", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    umask=0o077,
                )
            self._pidfd = os.pidfd_open(self._proc.pid)
            self._wait_ready(watch, time.monotonic() + timeout)
            ready = True
        finally:
            watch.close()
            if not ready:  # also on KeyboardInterrupt: a half-started Asterisk must go
                self.kill()

    def _wait_ready(self, watch: DirectoryWatch, deadline: float) -> None:
        assert self._pidfd is not None
        while not self._log_says_ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsteriskStartError(
                    self.name, "not ready before the start timeout", self.log_tail()
                )
            readable, _, _ = select.select([watch.fileno(), self._pidfd], [], [], remaining)
            if self._pidfd in readable:
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

    def _wait_exit(self, timeout: float) -> bool:
        """Wait for the process to exit without reaping it; True if it did."""
        assert self._pidfd is not None
        readable, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(readable)

    def _reap(self) -> None:
        """Kill leftovers in Asterisk's process group, then reap Asterisk.

        Called while Asterisk is an unreaped zombie, so its PID (= the process
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
        """Signal an adopted Asterisk through its pidfd (never a reused PID), SIGKILL it after
        ``timeout``; its parent (init, since ours died) reaps it."""
        assert self._pidfd is not None
        if not self._wait_exit(0):
            signal.pidfd_send_signal(self._pidfd, first)
            if not self._wait_exit(timeout):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                self._wait_exit(timeout)
        os.close(self._pidfd)
        self._pidfd = None
        self._adopted = None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM Asterisk, SIGKILL it after `timeout`; return its exit code (None for an
        adopted Asterisk, whose exit code goes to its own parent)."""
        if self._adopted is not None:
            self._end_adopted(signal.SIGTERM, timeout)
            return None
        if self._proc is None:
            return None
        proc = self._proc
        if proc.returncode is None and self._pidfd is not None and not self._wait_exit(0):
            proc.send_signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                proc.send_signal(signal.SIGKILL)
                self._wait_exit(timeout)
        self._reap()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL Asterisk and anything in its process group (crash tests)."""
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
        if not self._wait_exit(0):
            proc.send_signal(signal.SIGKILL)
            self._wait_exit(10.0)
        self._reap()
        return proc.returncode

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AsteriskInstance({self.name!r}, pid={self.pid}, ports={self.ports})"


__all__ = [
    "LOOPBACK",
    "AsteriskCliError",
    "AsteriskError",
    "AsteriskInstance",
    "AsteriskPorts",
    "AsteriskStartError",
    "DirectoryWatch",
    "read_ami_banner",
]
