"""Where a running Asterisk keeps its files, and which ports it really holds.

Asterisk says where its directories are (``core show settings``), as it sees them.  An
Asterisk in a chroot (the one ``backline up`` starts) sees its root as ``/``: the controller
reads those paths under that root, which it finds from the process that wrote Asterisk's PID
file (``/proc/PID/root``).  Reading another process's root and file descriptors needs the
rights ``backline up`` runs with (root, for chroot); without them, paths are taken as given.

Whether Asterisk bound its ports is read from the kernel (``/proc/net``), not from Asterisk's
word: an Asterisk whose SIP port was taken starts anyway and only logs an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PROC = Path("/proc")
# cdr_csv's file in Asterisk's log directory (cdr_csv.c: "cdr-csv/Master.csv").
CDR_CSV = PurePosixPath("cdr-csv") / "Master.csv"
_SETTING = re.compile(r"^\s*([A-Za-z][A-Za-z/ ()-]*?):\s+(.*?)\s*$")
_TCP_LISTEN = "0A"


class NotAsteriskSettings(ValueError):
    """``core show settings`` output without the directories we need."""


@dataclass(frozen=True, slots=True)
class PbxDirs:
    """An Asterisk's directories as it sees them, and whether it writes call records."""

    spool: PurePosixPath
    log: PurePosixPath
    pid_file: PurePosixPath
    cdr_enabled: bool

    @property
    def cdr_file(self) -> PurePosixPath:
        return self.log / CDR_CSV


def parse_settings(text: str) -> PbxDirs:
    """The directories in ``core show settings`` output; raise NotAsteriskSettings."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = _SETTING.match(line)
        if m:
            found.setdefault(m.group(1), m.group(2))
    try:
        spool, log_dir, pid_file = (PurePosixPath(found[k]) for k in (
            "Spool directory", "Log directory", "PID file"))
    except KeyError as exc:
        raise NotAsteriskSettings(f"no {exc.args[0]!r} in Asterisk's settings") from None
    if not all(p.is_absolute() for p in (spool, log_dir, pid_file)):
        raise NotAsteriskSettings("Asterisk's directories are not absolute paths")
    return PbxDirs(spool, log_dir, pid_file, found.get("Call data records") == "Enabled")


def under(root: Path, inside: PurePosixPath) -> Path:
    """Where a path an Asterisk sees inside ``root`` is on the host."""
    return root / str(inside).lstrip("/")


def root_of(pid_file: PurePosixPath, proc: Path = PROC) -> Path | None:
    """The host directory of the running Asterisk whose PID file is ``pid_file`` (as it sees
    it): ``/`` for one on the host, its root for a chroot; None if no process is found (or
    other processes cannot be looked at)."""
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            if not os.path.basename(argv0).startswith(b"asterisk"):
                continue
            root = Path(os.readlink(entry / "root"))
            if under(root, pid_file).read_text().strip() == entry.name:
                return root
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return None


def _socket_inodes(port: int, kind: str, proc: Path) -> set[str]:
    """Inodes of sockets bound to ``port`` (UDP), or listening on it (TCP), IPv4 and IPv6."""
    inodes: set[str] = set()
    for table in (kind, f"{kind}6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            if kind == "tcp" and state != _TCP_LISTEN:
                continue
            inodes.add(inode)
    return inodes


def _sockets_of(pid: int, proc: Path) -> set[str]:
    out: set[str] = set()
    fd_dir = proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def port_holders(port: int, kind: str, proc: Path = PROC) -> dict[int, str]:
    """The processes (PID: command name) holding ``port`` (``kind`` "udp" or "tcp")."""
    inodes = _socket_inodes(port, kind, proc)
    holders: dict[int, str] = {}
    if not inodes:
        return holders
    for entry in proc.iterdir():
        if entry.name.isdigit() and _sockets_of(int(entry.name), proc) & inodes:
            try:
                holders[int(entry.name)] = (entry / "comm").read_text().strip()
            except OSError:
                holders[int(entry.name)] = "?"
    return holders


def holds_port(pid: int, port: int, kind: str, proc: Path = PROC) -> bool:
    """True if process ``pid`` has a socket bound to ``port`` (listening, for TCP)."""
    return bool(_sockets_of(pid, proc) & _socket_inodes(port, kind, proc))
