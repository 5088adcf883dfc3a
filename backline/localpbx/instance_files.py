"""The files a local Asterisk instance writes for itself: those that say *where* it runs
and *on which ports* (asterisk.conf, logger.conf, rtp.conf, udptl.conf), and the few every
Asterisk wants to find.  What the PBX *does* (pjsip.conf, extensions.conf, manager.conf, ...)
is rendered elsewhere and handed in; these pure functions keep the two apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from backline.localpbx.pbxroot import ASTERISK
from backline.localpbx.ports import AsteriskPorts
from backline.render.asterisk import cdr_conf
from backline.render.modules import modules_conf

# Each instance's own directories, under /srv/backline-NAME inside the root.
INSTANCE_DIRS = ("etc", "run", "log", "spool", "lib", "cache")
LOG_FILE = "messages.log"
SECURITY_LOG_FILE = "security.log"

# Files whose content depends on the instance's directories and ports: a
# renderer handing one of these in would silently break isolation.
OWNED_FILES = frozenset({"asterisk.conf", "logger.conf", "rtp.conf", "udptl.conf"})
# Written empty (or, for modules.conf, from backline.render.modules) unless the
# caller hands in its own: they only silence "cannot load X.conf" errors.
DEFAULT_FILES = ("cdr.conf", "cel.conf", "features.conf", "acl.conf", "ccss.conf",
                 "pjproject.conf", "res_fax.conf", "res_parking.conf")  # fmt: skip
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

_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_handed_in(files: Mapping[str, str]) -> None:
    """Refuse (ValueError) a rendered file that is not a plain file name, or one the
    instance writes itself."""
    for fname in files:
        if not _FILE_NAME.fullmatch(fname):
            raise ValueError(f"config file name must be a plain file name: {fname!r}")
        if fname in OWNED_FILES:
            raise ValueError(f"{fname} is written by the instance (ports, directories)")


def owned_files(home: PurePosixPath, module_dir: PurePosixPath, ports: AsteriskPorts,
                verbose: int, systemname: str) -> dict[str, str]:
    """The files the instance at ``home`` (as Asterisk sees it) owns, for its ports."""
    d = {kind: home / kind for kind in INSTANCE_DIRS}
    files = {
        "asterisk.conf": (
            "; Rendered by Backline (backline/localpbx/instance_files.py).\n"
            "[directories]\n"
            f"astetcdir => {d['etc']}\n"
            f"astmoddir => {module_dir}\n"
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
            f"verbose = {verbose}\n"
            # Every cli() call is a remote console: do not log each connect.
            "hideconnect = yes\n"
            "astctlpermissions = 0600\n"
            + (f"systemname = {systemname}\n" if systemname else "")
        ),
        "logger.conf": (
            "[general]\n"
            "dateformat = %F %T.%3q\n"
            "[logfiles]\n"
            # start() waits for "Asterisk Ready." (a verbose message) in this file.
            f"{LOG_FILE} => notice,warning,error,verbose({max(verbose, 1)})\n"
            # Failed authentications etc. (res_security_log), for fail2ban.
            f"{SECURITY_LOG_FILE} => security\n"
        ),
        "rtp.conf": (
            f"[general]\nrtpstart = {ports.rtp_start}\nrtpend = {ports.rtp_end}\n"
        ),
        "udptl.conf": (
            "[general]\n"
            f"udptlstart = {ports.udptl_start}\n"
            f"udptlend = {ports.udptl_end}\n"
        ),
        "modules.conf": modules_conf(),
        "indications.conf": INDICATIONS_CONF,
    }
    for fname in DEFAULT_FILES:
        files[fname] = ""
    # cdr_csv is a required module and declines an empty cdr.conf.
    files["cdr.conf"] = cdr_conf()
    return files


def module_dir(root: Path) -> PurePosixPath:
    """Debian's multiarch module dir inside the root (x86_64-linux-gnu, aarch64-...)."""
    found = sorted(root.glob("usr/lib/*/asterisk/modules"))
    if found:
        return PurePosixPath("/") / found[0].relative_to(root)
    return PurePosixPath("/usr/lib/asterisk/modules")
