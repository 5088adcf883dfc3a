"""``backline run``, ``backline up`` and ``backline console``: the controller (and, for
``up``, the local Asterisk it starts) in the foreground, and that Asterisk's console."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from backline.app.commands.shared import CONFIG_HELP, UsageError, add_command, load_directory


def add_parsers(sub: Any) -> None:
    """The ``run``, ``up`` and ``console`` commands, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "run", cmd_run, "run the controller against a running PBX",
        "Run the controller alone, against a PBX that is already running. Prints a line "
        "starting 'ready' when it is serving, runs until interrupted (Ctrl-C or SIGTERM).")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")

    p = add_command(
        sub, "up", cmd_up, "set up and run the PBX and the controller",
        "Set up what is missing, start the PBX and the controller on the config's "
        "loopback ports, print a line starting 'ready', run until interrupted, and stop "
        "everything it started.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")

    p = add_command(
        sub, "console", cmd_console, "the Asterisk console of the PBX `up` started",
        "Attach to the Asterisk CLI (asterisk -r) of the Asterisk `backline up` started for "
        "the config, inside its root; with -x, run one command and print its output "
        "(asterisk -rx). The outage is switched there with `database put backline mode "
        "outage`. Exits 1 if that Asterisk is not running.")
    p.add_argument("-x", metavar="COMMAND", help="run COMMAND (e.g. 'core show channels') "
                   "and exit")
    p.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)


def _controller(args: argparse.Namespace, *, start_pbx: bool) -> int:
    from backline.app.claims import AlreadyRunning
    from backline.app.hangups import HeldHangups
    from backline.app.secrets import SecretMissing
    from backline.app.serve import run_controller
    from backline.localpbx.asterisk import NeedsAsterisk, PbxNotReady
    from backline.localpbx.instance import AsteriskError
    from backline.pbx.asterisk.ami import LoginRefused
    from backline.pbx.ports import PbxError

    hangups = HeldHangups()  # from the first moment: SIGHUP's default would end us
    directory = load_directory(args.config)
    try:
        return run_controller(directory, start_pbx=start_pbx, hangups=hangups)
    except (SecretMissing, NeedsAsterisk) as exc:
        raise UsageError(str(exc)) from exc
    except AlreadyRunning as exc:
        print(f"backline: {exc}", file=sys.stderr)
        return 2
    except (PbxError, LoginRefused, PbxNotReady, AsteriskError, OSError) as exc:
        # OSError: a port of ours taken (FastAGI, the pages), e.g. by a `run` already serving
        print(f"backline: {exc}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    return _controller(args, start_pbx=False)


def cmd_up(args: argparse.Namespace) -> int:
    return _controller(args, start_pbx=True)


def cmd_console(args: argparse.Namespace) -> int:
    import subprocess

    from backline.app.controller import config_path
    from backline.app.serve import instance_name
    from backline.localpbx.asterisk import NeedsAsterisk, local_instance
    from backline.localpbx.pbxroot import default_root

    directory = load_directory(args.config)
    try:
        instance = local_instance(directory, instance_name(directory), root=default_root())
    except NeedsAsterisk as exc:
        raise UsageError(str(exc)) from exc
    if instance.find_running() is None:
        print(f"backline: no Asterisk started by `backline up` is running for "
              f"{config_path(directory)} (start it with `backline up CONFIG`)", file=sys.stderr)
        return 1
    argv = instance.console_argv(args.x)
    if args.x is None:
        sys.stdout.flush()
        os.execvp(argv[0], argv)  # the operator's terminal is Asterisk's console now
    return subprocess.run(argv, check=False).returncode
