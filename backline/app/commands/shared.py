"""What the commands share: the config they load, the usage error (exit 2), who runs them,
and how times and untrusted text are shown."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from backline.app import config as config_mod
from backline.core.model import Directory

DEFAULT_CONFIG = "/etc/backline/backline.yaml"
CONFIG_HELP = ("the practice YAML (default: $BACKLINE_CONFIG, else "
               f"{DEFAULT_CONFIG})")


class UsageError(Exception):
    """The command line or the config is wrong: exit 2."""


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_: str,
                description: str) -> argparse.ArgumentParser:
    """A command on the top-level subparsers ``sub``, run by ``func``."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description)
    p.set_defaults(func=func)
    return p


def load_directory(path: str | None) -> Directory:
    """``--config``, else $BACKLINE_CONFIG, else the default; warnings go to stderr."""
    path = path or os.environ.get("BACKLINE_CONFIG") or DEFAULT_CONFIG
    if not Path(path).exists():
        raise UsageError(f"{path}: no such config file (give --config PATH or set "
                         "BACKLINE_CONFIG)")
    try:
        loaded = config_mod.load(path)
    except config_mod.ConfigError as exc:
        raise UsageError(f"{exc}\n{path}: {len(exc.problems)} problem(s); nothing was "
                         "started") from exc
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    return loaded.directory


def who(explicit: str | None) -> str:
    """``--by``, else the login that ran ``sudo``, else this login."""
    return explicit or os.environ.get("SUDO_USER") or getpass.getuser()


def local_time(at: datetime, directory: Directory) -> str:
    """``at`` in the practice's time zone, to the second."""
    return at.astimezone(ZoneInfo(directory.practice.timezone)).strftime("%Y-%m-%d %H:%M:%S")
