"""``python -m bench``: every bench with a short plan, one table (bench/table.py).

Run: .venv/bin/python -m bench [--quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bench import table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke plan: every bench, tiny sizes (checks the machinery)")
    args = parser.parse_args(argv)
    # The benches' controllers log each warning (no inbox configured, each 911's notice):
    # not figures.
    logging.getLogger("backline").setLevel(logging.ERROR)
    report = table.run(table.QUICK if args.quick else table.SHORT)
    print("\n".join(report.lines()))
    met, goals = table.verdicts(report)
    print(f"\n{met} of {goals} figures with a goal meet it"
          + (f"; could not run: {', '.join(report.failed)}" if report.failed else ""))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
