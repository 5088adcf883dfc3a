"""``backline``: the command line ops' scripts and runbooks rely on: its commands,
options, output and exit codes keep their meaning (extend them, never rename them).

Exit codes: 0 success, 2 a usage or config error (message on stderr, never a traceback),
1 anything else that stopped the command (e.g. the journal cannot be opened).
Each command is in ``backline/app/commands/``, with its own options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backline.app.commands import (
    attempts,
    configuration,
    conversation,
    doctor,
    hours,
    install,
    outage,
    reload,
    running,
    text,
)
from backline.app.commands.shared import UsageError
from backline.journal import JournalError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backline",
        description="Backline: routing by number ownership and a backup (outage) mode for a "
                    "medical practice's own PBX.",
        epilog="Each command has --help.  Exit status: 0 success, 2 usage or config error, "
               "1 other failure.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    configuration.add_check_parser(sub)
    configuration.add_render_parser(sub)
    running.add_parsers(sub)
    outage.add_parser(sub)
    attempts.add_parser(sub)
    conversation.add_parser(sub)
    text.add_parser(sub)
    hours.add_parser(sub)
    doctor.add_parser(sub)
    reload.add_parser(sub)
    install.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on stderr for a usage error
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"backline: {exc}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"backline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
