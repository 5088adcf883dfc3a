"""``backline doctor``: `check` validates the file; this tries the world the file describes,
one line per check with its verdict and, when it is not ok, the fix.

The local checks: the journal writable with free space, the fax and voicemail stores' free
space, the file modes of the journal and the secrets; on Asterisk the AMI login, the modules
Backline needs loaded, the clock, the carrier trunk's registration, the controller's FastAGI
where Asterisk sends calls, a voicemail folder's lock left held, and the desk phones
registered now (doctor_pbx); on FreeSWITCH the call record's row token; the mail relay,
the SMS gateway and the inbox (doctor_relays).  Exit 0 when nothing failed (warnings
included), 1 otherwise, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backline.app.commands.doctor_verdicts import FAIL, OK, SKIP, WARN, Finding
from backline.app.commands.shared import CONFIG_HELP, add_command, load_directory
from backline.core.connections import (
    DEFAULT_FREE_FLOOR_MB,
    AsteriskPbx,
    FreeswitchPbx,
    Secret,
)
from backline.core.model import Directory

AMI_WITHIN = 5.0  # seconds: a doctor that hangs on a dead PBX tells ops nothing
# Free space under which the fax and voicemail stores' disk is warned of: about a thousand
# minutes of voicemail, or tens of thousands of fax pages.
STORE_WARN_MB = 1024


def add_parser(sub: Any) -> None:
    """The ``doctor`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "doctor", cmd_doctor, "try what the config connects to, and say what to fix",
        "Try each thing CONFIG relies on for real and print one line per check with its "
        "verdict (ok, warn, FAIL, skip) and the fix: the journal writable with free space, "
        "the free space of the fax and voicemail stores' disk, "
        "the file modes of the journal and the secrets, the AMI login, the Asterisk modules "
        "Backline needs, the PBX's clock, the carrier trunk's registration, the controller's "
        "FastAGI where Asterisk sends calls, a voicemail folder app_voicemail cannot lock "
        "(a lock left held), the desk phones registered now and those that "
        "refuse their encrypted ring (from the running controller), on FreeSWITCH the call "
        "record's row token in connections.pbx.secrets_file, the mail relay "
        "(STARTTLS, its certificate, the login), the SMS "
        "gateway's credentials and the inbox's URL and token (nothing is sent or filed; "
        "--send-test sends one test email). Exits 1 if any check failed, else 0.")
    p.add_argument("config", metavar="CONFIG", help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    p.add_argument("--send-test", action="store_true",
                   help="also send a test email to the alert recipients (never by default)")


def cmd_doctor(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)
    findings = journal_findings(directory) + store_findings(directory)
    findings += secret_findings(directory)
    findings += asyncio.run(world_findings(directory, send_test=args.send_test))
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        width = max(len(f.check) for f in findings)
        for f in findings:
            print(f"{f.verdict:<4}  {f.check:<{width}}  {f.seen}"
                  + (f"; fix: {f.fix}" if f.fix else ""))
    return 1 if any(f.verdict == FAIL for f in findings) else 0


async def world_findings(directory: Directory, *, send_test: bool) -> list[Finding]:
    """The checks that talk to peers, run side by side (each bounded in time), in order."""
    from backline.app.commands.doctor_pbx import encryption_finding
    from backline.app.commands.doctor_relays import inbox_findings, sms_findings, smtp_findings

    found = await asyncio.gather(pbx_findings(directory), encryption_finding(directory),
                                 smtp_findings(directory, send_test=send_test),
                                 sms_findings(directory), inbox_findings(directory))
    return [f for part in found for f in part]


def journal_findings(directory: Directory) -> list[Finding]:
    """The SQLite journal's directory writable, with free space above the floor, and no file
    of it open to other users (PostgreSQL's disk and modes are its server's to watch)."""
    from backline.journal.sqlite import exposed_files

    url = directory.connections.storage.url
    if not url.startswith("sqlite://"):
        return [Finding("journal disk", SKIP, "the journal is on PostgreSQL: its server "
                        "watches its disk and modes")]
    path = Path(url.removeprefix("sqlite://"))
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent  # the controller creates the missing directories
    intake = directory.connections.email_intake
    floor = (intake.free_floor_mb if intake is not None else DEFAULT_FREE_FLOOR_MB) << 20
    out: list[Finding] = []
    writable_target = path if path.exists() else where
    if not os.access(writable_target, os.W_OK) or not os.access(where, os.W_OK | os.X_OK):
        out.append(Finding("journal writable", FAIL, f"{writable_target} is not writable by "
                           f"this user (uid {os.getuid()})",
                           f"run doctor as the controller's user, or chown {where} to it"))
    else:
        out.append(Finding("journal writable", OK, f"{path} (in {where})"))
    free = shutil.disk_usage(where).free
    seen = f"{free >> 20} MB free on {where} (floor {floor >> 20} MB)"
    if free < floor:
        out.append(Finding("journal disk", FAIL, seen, "free space on that disk: below the "
                           "floor the email intake turns mail away"))
    elif free < 2 * floor:
        out.append(Finding("journal disk", WARN, seen, "free space on that disk soon"))
    else:
        out.append(Finding("journal disk", OK, seen))
    exposed = exposed_files(path)
    if exposed:
        out.append(Finding("journal modes", FAIL, ", ".join(
            f"{p} is mode {m:04o}" for p, m in exposed) + ": other users can read callers' "
            "numbers", f"chmod go-rwx {' '.join(str(p) for p, _ in exposed)}"))
    else:
        out.append(Finding("journal modes", OK, "private to its owner"))
    return out


def store_findings(directory: Directory) -> list[Finding]:
    """The disk of the fax and voicemail stores (``connections.pbx.fax_dir`` and
    ``voicemail/`` beside it): FAIL below what the fax intake needs to take a fax (it refuses
    faxes then), warn below STORE_WARN_MB."""
    from backline.core.fax_intake import MIN_FREE_BYTES
    from backline.pbx.voicemail_desk import voicemail_store

    pbx = directory.connections.pbx
    if pbx is None:
        return [Finding("fax and voicemail disk", SKIP, "connections.pbx is not configured")]
    disks: dict[int, tuple[Path, int]] = {}  # by device: one line per disk, not per folder
    for store in (Path(pbx.fax_dir), voicemail_store(Path(pbx.fax_dir))):
        where = store
        while not where.exists() and where != where.parent:
            where = where.parent  # the controller creates the missing directories
        disks.setdefault(where.stat().st_dev, (where, shutil.disk_usage(where).free))
    free = min(f for _, f in disks.values())
    seen = "; ".join(f"{f >> 20} MB free on {w}" for w, f in disks.values()) + \
        f" (faxes refused below {MIN_FREE_BYTES >> 20} MB, warned below {STORE_WARN_MB} MB)"
    fix = "free space on that disk"
    if directory.connections.storage.delivered_days is None:
        fix += (", or set connections.storage.delivered_days so that faxes and voicemail "
                "the inbox accepted are removed after that many days")
    if free < MIN_FREE_BYTES:
        return [Finding("fax and voicemail disk", FAIL, seen, fix + ": faxes are refused")]
    if free < STORE_WARN_MB << 20:
        return [Finding("fax and voicemail disk", WARN, seen, fix)]
    return [Finding("fax and voicemail disk", OK, seen)]


def secret_findings(directory: Directory) -> list[Finding]:
    """Every secret the config names by file, and the desk-phone secrets file: present and
    readable by no one but their owner."""
    files = sorted({s.file for s in _secrets(directory) if s.file}
                   | _desk_phone_secrets(directory))
    out: list[Finding] = []
    for name in files:
        path = Path(name)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            out.append(Finding(f"secret {name}", FAIL, "missing",
                               f"create it (mode 0600) or fix its path in {directory.source}"))
            continue
        except OSError as exc:
            out.append(Finding(f"secret {name}", FAIL, f"cannot be read ({exc.strerror})",
                               "run doctor as the controller's user"))
            continue
        if mode & 0o077:
            out.append(Finding(f"secret {name}", FAIL, f"mode {mode:04o}: other users can "
                               "read it", f"chmod 600 {name}"))
        else:
            out.append(Finding(f"secret {name}", OK, f"mode {mode:04o}"))
    return out


def _secrets(directory: Directory) -> list[Secret]:
    """The secrets the connections name (found by walking them: a new one is not missed)."""
    found: list[Secret] = []

    def walk(value: object) -> None:
        if isinstance(value, Secret):
            found.append(value)
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name))
        elif isinstance(value, tuple):
            for item in value:
                walk(item)

    walk(directory.connections)
    walk(directory.backup)
    return found


def _desk_phone_secrets(directory: Directory) -> set[str]:
    pbx = directory.connections.pbx
    if pbx is None or not Path(pbx.secrets_file).exists():
        return set()  # `backline render` creates it; nothing to check before
    return {pbx.secrets_file}


async def pbx_findings(directory: Directory,
                       now: Callable[[], float] = time.time) -> list[Finding]:
    """On Asterisk: the AMI login, the modules Backline needs, the clock against ``now``,
    the carrier trunk's registration, the voicemail folders' locks (their age against
    ``now``), the desk phones registered.  On FreeSWITCH: the call record's row token."""
    from backline.app.commands.doctor_pbx import (
        clock_finding,
        fastagi_finding,
        trunk_finding,
        voicemail_lock_finding,
    )
    from backline.app.secrets import SecretMissing, read_secret
    from backline.core.ownership import OwnershipBook
    from backline.pbx.asterisk.ami import AmiLink, LoginRefused
    from backline.pbx.asterisk.contacts import desk_phone_contacts
    from backline.pbx.ports import LinkDown
    from backline.render.modules import required_modules

    pbx = directory.connections.pbx
    if isinstance(pbx, FreeswitchPbx):
        from backline.app.commands.doctor_pbx import row_token_finding

        return [Finding("AMI login", SKIP, "FreeSWITCH: these checks are for Asterisk"),
                row_token_finding(pbx)]
    if not isinstance(pbx, AsteriskPbx):
        return [Finding("AMI login", SKIP, "connections.pbx is not configured")]
    try:
        secret = read_secret(pbx.ami_secret, "connections.pbx.ami")
    except SecretMissing as exc:
        return [Finding("AMI login", FAIL, str(exc), "set the AMI secret the config names")]
    link = AmiLink(pbx.ami.host, pbx.ami.port, pbx.ami_username, secret)
    try:
        try:
            await link.connect(within=AMI_WITHIN)
        except LoginRefused as exc:
            return [Finding("AMI login", FAIL, f"{pbx.ami}: {exc}",
                            "the secret must be the one `backline render` wrote into "
                            "manager.conf: render again with it and reload Asterisk")]
        except LinkDown as exc:
            return [Finding("AMI login", FAIL, f"{pbx.ami}: {exc}",
                            "start Asterisk (`backline up`), or fix connections.pbx.ami")]
        out = [Finding("AMI login", OK, f"{pbx.ami_username}@{pbx.ami}")]
        missing = []
        for module in required_modules():
            answer = await link.action({"Action": "ModuleCheck", "Module": module})
            if answer.get("Response") != "Success":
                missing.append(module)
        if missing:
            out.append(Finding("modules", FAIL, "not loaded: " + ", ".join(missing),
                               "install them and load them (`module load NAME`); "
                               "`backline render` writes the modules.conf that loads them"))
        else:
            out.append(Finding("modules", OK, f"{len(required_modules())} loaded"))
        out.append(await clock_finding(link, now))
        out.append(await trunk_finding(link, pbx))
        out.append(await fastagi_finding(link, pbx))
        out.append(await voicemail_lock_finding(link, pbx, directory, now))
        book = OwnershipBook(directory)
        if pbx.registrar is not None:  # Kamailio holds them, in the shared database
            import psycopg

            from backline.pbx.registrar import location_contacts, read_location

            try:
                rows = await asyncio.to_thread(read_location,
                                               directory.connections.storage.url)
            except psycopg.Error as exc:
                out.append(Finding("desk phones", FAIL, "the registrar's location table: "
                                   f"{type(exc).__name__}", "create it (location.sql from "
                                   "`backline render --kamailio`) in the shared database"))
                return out
            held = location_contacts(book, rows)
        else:
            listing = await link.action({"Action": "PJSIPShowContacts"}, as_list=True,
                                        within=10.0)
            held, _ = desk_phone_contacts(book, listing)
        registered = {r.desk_phone for r in held}
        phones = sorted(p for u in directory.users if u.active for p in u.desk_phones)
        absent = [p for p in phones if p not in registered]
        seen = f"{len(phones) - len(absent)} of {len(phones)} registered"
        if absent:
            out.append(Finding("desk phones", WARN, f"{seen}; not: {', '.join(absent)}",
                               "check each phone is on, on the network, and provisioned "
                               "with its account (desk-phones.csv from `backline render`)"))
        else:
            out.append(Finding("desk phones", OK, seen))
        return out
    finally:
        link.close()
