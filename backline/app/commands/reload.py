"""``backline reload``: apply a changed practice YAML to the running controller, live.

The YAML is checked here first (a config with problems is not sent: nothing changes); then
the controller serving the config (found as the process holding its FastAGI address) is sent
SIGHUP, and its answer read back from the audit log it writes (backline/app/reload.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from backline.app import config as config_mod
from backline.app.commands.shared import add_command
from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.journal import open_journal

AUDIT_ACTIONS = ("config.reload", "config.reload.refused")
POLL_SECONDS = 0.1


def add_parser(sub: Any) -> None:
    """The ``reload`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "reload", cmd_reload, "apply a changed config to the running controller",
        "Check CONFIG, then have the controller running on it apply it without a restart "
        "(as SIGHUP or `systemctl reload` do): who owns a number, users (de)activated, desk "
        "phones, teams. With `backline up`, the Asterisk files that changed are written and "
        "only their modules reloaded, and the greetings and announcements rendered again. "
        "Calls in progress are untouched. A config with problems changes nothing (exit 2); "
        "exit 1 if no controller runs on it or it refused the config.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the controller's answer (default 30)")


def cmd_reload(args: argparse.Namespace) -> int:
    from backline.localpbx.whereabouts import port_holders

    try:
        loaded = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: {len(exc.problems)} problem(s); not reloaded, the running "
              "controller keeps its config", file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    directory = loaded.directory
    pbx = directory.connections.pbx
    if isinstance(pbx, FreeswitchPbx):
        print("backline: a live reload is built for Asterisk only: restart the controller "
              "to apply the config on FreeSWITCH", file=sys.stderr)
        return 1
    if not isinstance(pbx, AsteriskPbx):
        print("backline: connections.pbx is not configured: no controller to reload",
              file=sys.stderr)
        return 1
    address = pbx.agi
    holders = sorted(port_holders(address.port, "tcp"))
    if not holders:
        print(f"backline: no controller is running on {args.config} (nothing listens on "
              f"{address}); it reads the config when it starts", file=sys.stderr)
        return 1
    journal = open_journal(directory.connections.storage.url)
    try:
        before = [len(journal.audit_entries(a)) for a in AUDIT_ACTIONS]
        for pid in holders:
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + args.wait
        while True:
            for action, seen in zip(AUDIT_ACTIONS, before, strict=True):
                entries = journal.audit_entries(action)
                if len(entries) > seen:
                    applied = action == AUDIT_ACTIONS[0]
                    print(f"reload (pid {', '.join(map(str, holders))}): "
                          f"{entries[-1].detail}", file=sys.stdout if applied else sys.stderr)
                    return 0 if applied else 1
            if time.monotonic() >= deadline:
                print(f"backline: the controller (pid {', '.join(map(str, holders))}) did "
                      f"not answer within {args.wait:g} s: see its log", file=sys.stderr)
                return 1
            time.sleep(POLL_SECONDS)
    finally:
        journal.close()
