"""A controller stand-in for the crash test: records attempts as fast as it can and prints
``ack KEY`` for each one only after the journal has returned, as the controller would answer
the PBX.  Killed with SIGKILL by the test at an arbitrary moment."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from backline.core.outage import Mode
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal


def main(url: str) -> None:
    journal = open_journal(url)
    i = 0
    while True:
        key = f"call-{i}"
        journal.record_attempt(NewAttempt(
            key, datetime.now(UTC), AttemptKind.CALL, Mode.OUTAGE, "+17205550141",
            "+13125550100", Outcome.ANNOUNCED, delivery=Delivery.HELD))
        sys.stdout.write(f"ack {key}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
