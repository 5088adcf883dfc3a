"""The Debian root Asterisk runs from, built once with debootstrap.

Debian's own packages give us a known Asterisk (22.x) without touching the
host's package set: `debootstrap` unpacks them into a directory and every
instance runs `chroot ROOT /usr/sbin/asterisk`.  Building takes about a minute
and ~550 MB, so it happens once per machine: under a file lock (pytest-xdist
workers and a parallel `backline up` must not build twice), into a temporary
sibling that is renamed into place only when it works, so a crash mid-build
never leaves a half root behind that looks usable.

Run `python -m backline.localpbx.pbxroot` to build (if needed) and print it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_ROOT = Path("/var/cache/backline/asterisk-root")
ROOT_ENV = "BACKLINE_ASTERISK_ROOT"
MIRROR_ENV = "BACKLINE_DEBIAN_MIRROR"
SUITE = "sid"  # the only suite with Asterisk 22 in Debian's archive
PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-wav")
ASTERISK = "/usr/sbin/asterisk"

# Character devices Asterisk opens inside the root: /dev/urandom seeds its
# random numbers (SIP tags, Call-IDs, RTP SSRCs), /dev/null is what its children
# and `asterisk -rx` get as stdio.  debootstrap makes them when it can mknod;
# we recreate any that are missing (e.g. root built where mknod was denied).
# Nothing is mounted: Asterisk runs without /proc or /sys in the root.
DEVICES: dict[str, tuple[int, int]] = {
    "null": (1, 3),
    "zero": (1, 5),
    "random": (1, 8),
    "urandom": (1, 9),
}

Log = Callable[[str], None]


class RootError(Exception):
    """The root could not be built or does not run Asterisk."""

    def __init__(self, root: Path, detail: str) -> None:
        super().__init__(f"{root}: {detail}")
        self.root = root
        self.detail = detail


def _stderr_log(line: str) -> None:
    print(f"pbxroot: {line}", file=sys.stderr, flush=True)


def default_root() -> Path:
    """The root's location: $BACKLINE_ASTERISK_ROOT or /var/cache/backline/asterisk-root."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def asterisk_version(root: Path) -> str | None:
    """`asterisk -V` run inside the root, or None if it does not run."""
    if not (root / ASTERISK.lstrip("/")).is_file():
        return None
    try:
        done = subprocess.run(
            ["chroot", str(root), ASTERISK, "-V"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    if done.returncode != 0 or not out.startswith("Asterisk "):
        return None
    return out


def ensure_devices(root: Path) -> None:
    """Create the character devices Asterisk needs in ROOT/dev if missing."""
    dev = root / "dev"
    dev.mkdir(mode=0o755, exist_ok=True)
    for name, (major, minor) in DEVICES.items():
        node = dev / name
        try:
            mode = node.lstat().st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and stat.S_ISCHR(mode) and node.stat().st_rdev == os.makedev(
            major, minor
        ):
            continue
        if mode is not None:
            node.unlink()  # a plain file here would silently swallow or fake data
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(node, 0o666)  # mknod honours the umask


def ensure_hosts(root: Path) -> None:
    """Name this host and localhost in ROOT/etc/hosts.

    debootstrap leaves no /etc/hosts, so Asterisk's look-ups of its own host name (e.g. for
    RTCP on a wildcard address) go to DNS, off the machine, and stall on a lost reply.
    """
    hosts = root / "etc" / "hosts"
    name = socket.gethostname()
    wanted = f"127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost\n"
    if not hosts.exists() or name not in hosts.read_text():
        hosts.write_text(wanted)


def _is_ready(root: Path) -> bool:
    if asterisk_version(root) is None:
        return False
    return all(
        (root / "dev" / name).exists() and stat.S_ISCHR((root / "dev" / name).stat().st_mode)
        for name in DEVICES
    )


@contextmanager
def _build_lock(root: Path, log: Log) -> Iterator[None]:
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building {root}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _debootstrap(target: Path, log: Log) -> None:
    """Run debootstrap into TARGET, printing one line per phase, not per package."""
    if shutil.which("debootstrap") is None:
        raise RootError(target, "debootstrap is not installed (apt-get install debootstrap)")
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
    ]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        cmd.append(mirror)
    log("running " + " ".join(cmd))
    tail: list[str] = []
    phases: set[str] = set()
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-29:], line]
            # "I: Retrieving libfoo 1.2" is phase "I: Retrieving": print the first
            # line of each phase, not the ~400 per-package lines.
            phase = " ".join(line.split()[:2])
            if line.startswith(("E:", "W:")) or phase not in phases:
                phases.add(phase)
                log(line)
        code = proc.wait()
    if code != 0:
        raise RootError(target, f"debootstrap exited {code}:\n" + "\n".join(tail))


def _remove(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path)


def ensure_root(path: Path | None = None, log: Log = _stderr_log) -> Path:
    """Return a root whose Asterisk runs, building it first if missing or broken.

    Safe to call from many processes at once: one builds, the others wait on
    the lock and then find the root ready.  Raises RootError if the build fails
    or the result still does not run Asterisk.
    """
    root = (path or default_root()).absolute()
    if _is_ready(root):
        with contextlib.suppress(PermissionError):  # a root someone else built and owns
            ensure_hosts(root)
        return root
    if os.geteuid() != 0:
        raise RootError(root, "building the Asterisk root needs root (debootstrap, chroot)")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(root, log):
        version = asterisk_version(root)
        if version is not None:
            # Built by whoever held the lock, or only the devices were missing.
            ensure_devices(root)
            ensure_hosts(root)
            return root
        # Under the lock, any leftover build or broken dir is from a dead process.
        for stale in root.parent.glob(f".{root.name}.*-*"):
            log(f"removing leftover {stale}")
            _remove(stale)
        started = time.monotonic()
        tmp = root.parent / f".{root.name}.build-{os.getpid()}"
        log(f"building {root} (about a minute, ~550 MB)")
        built = False
        try:
            _debootstrap(tmp, log)
            ensure_devices(tmp)
            ensure_hosts(tmp)
            version = asterisk_version(tmp)
            if version is None:
                raise RootError(tmp, "debootstrap succeeded but `asterisk -V` does not run")
            built = True
        finally:
            if not built:  # also on KeyboardInterrupt: never leave 500 MB behind
                _remove(tmp)
        if root.exists() or root.is_symlink():
            # rename() cannot replace a non-empty directory: move the broken one aside.
            broken = root.parent / f".{root.name}.broken-{os.getpid()}"
            log(f"replacing broken {root}")
            os.rename(root, broken)
            os.rename(tmp, root)
            _remove(broken)
        else:
            os.rename(tmp, root)
        log(f"{version} ready in {root} after {time.monotonic() - started:.0f} s")
    return root


def main() -> int:
    """Ensure the root and print its path (for scripts and setup docs)."""
    try:
        root = ensure_root()
    except RootError as exc:
        _stderr_log(str(exc))
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
