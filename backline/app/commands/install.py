"""``backline install`` and ``backline uninstall``: Backline as a systemd service with a
dedicated user.

``install --config PATH`` checks the YAML, then: creates the system user (``useradd
--system``, no login shell), the directories the controller writes (0750, the user's: the
journal's, the desk-phone secrets', the faxes', the voicemail's, with ``--local-pbx`` the
local Asterisk's instances), ``/etc/backline`` (0750 root:backline) with ``backline.env``
(0640, the names of the variables the config's secrets come from, to fill in), the unit
(backline/render/systemd.py), and enables it.  Each step says what it does; ``--dry-run``
only says.  ``--root DIR`` does all of it inside DIR (tests; an image being built).  It is
idempotent: what exists is kept (an existing ``backline.env`` is never overwritten).

``uninstall`` disables and removes the unit and leaves the journal, the secrets, the config
and the user: a reinstall finds the practice's history where it was.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backline.app.commands.shared import add_command, load_directory
from backline.core.model import Directory
from backline.pbx.voicemail_desk import voicemail_store
from backline.render.systemd import UNIT_NAME, ServiceSpec, controller_unit

ETC = "/etc/backline"
ENV_FILE = f"{ETC}/backline.env"
UNITS = "/etc/systemd/system"
REPO = Path(__file__).resolve().parents[3]


def add_parsers(sub: Any) -> None:
    """The ``install`` and ``uninstall`` commands, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "install", cmd_install, "install Backline as a systemd service",
        "Check CONFIG, then create the system user, the directories the controller writes "
        f"(mode 0750), {ETC} with backline.env for the secrets' variables (0640), the unit "
        f"{UNITS}/{UNIT_NAME} (hardened; `systemctl reload` runs `backline reload`), and "
        "enable it. Prints each step; --dry-run only prints them.")
    p.add_argument("--config", required=True, metavar="PATH", help="the practice YAML the "
                   "service runs (its absolute path goes into the unit)")
    p.add_argument("--root", default="/", metavar="DIR", help="install inside DIR "
                   "instead of / (nothing outside it is touched)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done")
    p.add_argument("--user", default="backline", help="the service's user (default "
                   "backline)")
    p.add_argument("--local-pbx", action="store_true", help="the service also runs the "
                   "local Asterisk (`backline up`) instead of serving one already running")
    p = add_command(
        sub, "uninstall", cmd_uninstall, "remove the systemd service (the journal stays)",
        f"Disable and remove {UNIT_NAME}. The journal, the secrets, {ETC} and the user "
        "stay.")
    p.add_argument("--root", default="/", metavar="DIR", help="uninstall inside DIR")
    p.add_argument("--dry-run", action="store_true", help="print what would be done")


class Steps:
    """Says each step, and does it unless ``dry``; ``root`` prefixes every path touched."""

    def __init__(self, root: str, dry: bool) -> None:
        self.root = Path(root)
        self.dry = dry
        self.live = root == "/" and Path("/run/systemd/system").is_dir()

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def do(self, says: str, action: Callable[[], None]) -> None:
        print(("would: " if self.dry else "") + says, flush=True)
        if not self.dry:
            action()

    def run(self, argv: list[str]) -> None:
        self.do(" ".join(argv), lambda: _check(argv))


def _check(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallFailed(f"{' '.join(argv)} exited {done.returncode}: "
                            f"{done.stderr.strip()[-300:]}")


class InstallFailed(Exception):
    """A step failed: what ran and what it said."""


def cmd_install(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)  # a config with problems: exit 2, nothing done
    steps = Steps(args.root, args.dry_run)
    spec = service_spec(directory, str(Path(args.config).resolve()), args.user,
                        local_pbx=args.local_pbx)
    try:
        for path in spec.writable:  # before anything is done
            if _shared(steps, path, args.user):
                raise InstallFailed(
                    f"{steps.at(path)} holds files that are not Backline's (the system's or "
                    "another program's): making it the service's would shut them out; give "
                    "Backline a directory of its own in the config (e.g. /var/lib/backline)")
        _user(steps, args.user)
        for path in spec.writable:
            _directory(steps, path, 0o750, args.user, args.user)
        _directory(steps, ETC, 0o750, "root", args.user)
        _env_file(steps, directory, args.user)
        unit = steps.at(f"{UNITS}/{UNIT_NAME}")
        text = controller_unit(spec)
        steps.do(f"write {unit} (0644)", lambda: _write(unit, text, 0o644))
        if steps.live:
            steps.run(["systemctl", "daemon-reload"])
            steps.run(["systemctl", "enable", UNIT_NAME])
        else:
            steps.run(["systemctl", f"--root={steps.root}", "enable", UNIT_NAME])
    except (InstallFailed, OSError, KeyError) as exc:
        print(f"backline: install stopped: {exc}", file=sys.stderr)
        return 1
    missing = "" if args.dry_run else _unset_variables(steps, directory)
    print(f"{'would install' if args.dry_run else 'installed'} {UNIT_NAME} for "
          f"{directory.practice.name}{missing}; start it: systemctl start {UNIT_NAME}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    steps = Steps(args.root, args.dry_run)
    unit = steps.at(f"{UNITS}/{UNIT_NAME}")
    try:
        if steps.live:
            steps.run(["systemctl", "disable", "--now", UNIT_NAME])
        elif unit.exists():
            steps.run(["systemctl", f"--root={steps.root}", "disable", UNIT_NAME])
        steps.do(f"remove {unit}", lambda: unit.unlink(missing_ok=True))
        if steps.live:
            steps.run(["systemctl", "daemon-reload"])
    except (InstallFailed, OSError) as exc:
        print(f"backline: uninstall stopped: {exc}", file=sys.stderr)
        return 1
    print(f"{'would remove' if args.dry_run else 'removed'} {UNIT_NAME}; kept: the journal, "
          f"the secrets, {ETC} and the user")
    return 0


def service_spec(directory: Directory, config: str, user: str, *,
                 local_pbx: bool) -> ServiceSpec:
    """The unit's inputs from the config: where the controller writes, and how it runs."""
    c = directory.connections
    writable: list[str] = []
    if c.storage.url.startswith("sqlite://"):
        writable.append(str(Path(c.storage.url.removeprefix("sqlite://")).parent))
    if c.pbx is not None:
        writable += [str(Path(c.pbx.secrets_file).parent), c.pbx.fax_dir,
                     str(voicemail_store(Path(c.pbx.fax_dir)))]
    if local_pbx:
        from backline.localpbx.pbxroot import default_root

        writable.append(str(default_root() / "srv"))  # the instances `up` renders and runs
    kept: list[str] = []
    for path in sorted(set(writable), key=len):  # a directory inside another is covered
        if not any(Path(path).is_relative_to(k) for k in kept):
            kept.append(path)
    here = Path(sys.executable).parent / "backline"
    command = (str(here),) if here.exists() else (sys.executable, "-m", "backline.app.cli")
    docs = REPO / "docs" / "operating.md"
    return ServiceSpec(directory.practice.name, command, config, user, tuple(kept), ENV_FILE,
                       local_pbx=local_pbx, docs=str(docs) if docs.exists() else "")


def _user(steps: Steps, user: str) -> None:
    if _uid(steps, user) is not None:
        print(f"user {user} exists", flush=True)
        return
    prefix = [] if str(steps.root) == "/" else ["--prefix", str(steps.root)]
    steps.run(["useradd", *prefix, "--system", "--user-group", "--no-create-home",
               "--home-dir", "/var/lib/backline", "--shell", "/usr/sbin/nologin", user])


def _uid(steps: Steps, user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` in the root's passwd file, or None."""
    if str(steps.root) == "/":
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    passwd = steps.at("/etc/passwd")
    for line in passwd.read_text().splitlines() if passwd.exists() else []:
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


SYSTEM_DIRECTORIES = frozenset({
    "/", "/etc", "/home", "/mnt", "/media", "/opt", "/root", "/run", "/srv", "/tmp", "/usr",
    "/usr/local", "/var", "/var/cache", "/var/lib", "/var/local", "/var/log", "/var/opt",
    "/var/spool", "/var/tmp"})
"""Directories the system and other programs share: never made the service's."""


def _shared(steps: Steps, path: str, owner: str) -> bool:
    """Whether ``path`` is the system's or holds other users' files (not root's, not the
    service's): made the service's (0750) it would shut them out."""
    if os.path.normpath(path) in SYSTEM_DIRECTORIES:
        return True
    target = steps.at(path)
    if not target.is_dir():
        return False
    mine = {0, *(_uid(steps, owner) or ())}
    return any(entry.lstat().st_uid not in mine for entry in target.iterdir())


def _directory(steps: Steps, path: str, mode: int, owner: str, group: str) -> None:
    target = steps.at(path)

    def make() -> None:
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, mode)
        ids = _owner_ids(steps, owner, group)
        os.chown(target, *ids)

    steps.do(f"directory {target} ({mode:04o}, {owner}:{group})", make)


def _owner_ids(steps: Steps, owner: str, group: str) -> tuple[int, int]:
    found = _uid(steps, group)
    if found is None:
        raise KeyError(f"no user {group} in {steps.at('/etc/passwd')}")
    return (0 if owner == "root" else found[0]), found[1]


def _env_file(steps: Steps, directory: Directory, user: str) -> None:
    target = steps.at(ENV_FILE)
    if target.exists():
        print(f"{target} exists: kept as it is", flush=True)
        return
    names = _variables(directory)
    text = ("# The secrets Backline's config names, one VARIABLE=value a line (systemd's\n"
            "# EnvironmentFile=): mode 0640, root:backline.\n"
            + "".join(f"{name}=\n" for name in names))

    def write() -> None:
        _write(target, text, 0o640)
        os.chown(target, *_owner_ids(steps, "root", user))

    steps.do(f"write {target} (0640, root:{user}): {', '.join(names) or 'no variables'}",
             write)


def _variables(directory: Directory) -> list[str]:
    from backline.app.commands.doctor import _secrets

    return sorted({s.env for s in _secrets(directory) if s.env})


def _unset_variables(steps: Steps, directory: Directory) -> str:
    """``; set in ENV: A, B`` for the variables backline.env leaves empty."""
    try:
        lines = steps.at(ENV_FILE).read_text().splitlines()
    except OSError:
        return ""
    empty = [n for n in _variables(directory) if f"{n}=" in lines]
    return f"; set in {ENV_FILE}: {', '.join(empty)}" if empty else ""


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
