"""Wrong outage PINs lock a desk phone out, for longer each time: pure, times are arguments.

The outage PIN is a few digits and a desk phone can try hundreds a second through the
dialplan (``*28`` + PIN, one call each): without a limit it is found in minutes.  A desk
phone may get the PIN wrong ``free_tries - 1`` times; the next wrong one locks it out for
``first_lockout``, and every wrong PIN after a lockout doubles it (up to ``longest_lockout``).
While locked out every try is refused without looking at the PIN, so the right one is no
proof of anything; a right PIN outside a lockout clears the record.  Tries during a lockout do
not lengthen it: an attacker can keep one desk phone locked, never the others.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class PinPolicy:
    free_tries: int = 3
    first_lockout: timedelta = timedelta(seconds=30)
    longest_lockout: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class PinRecord:
    """One desk phone's wrong PINs since its last right one."""

    failures: int = 0
    locked_until: datetime | None = None


class PinVerdict(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong PIN"
    LOCKED_OUT = "locked out"  # refused without the PIN being looked at


@dataclass(frozen=True, slots=True)
class PinJudgement:
    verdict: PinVerdict
    record: PinRecord               # the desk phone's record from now on
    lockout: timedelta | None = None  # set when this try started a lockout (tell the admins)


def lockout_after(failures: int, policy: PinPolicy) -> timedelta | None:
    """How long the ``failures``-th wrong PIN in a row locks the desk phone out, if at all."""
    if failures < policy.free_tries:
        return None
    doublings = min(failures - policy.free_tries, 30)  # 2**30 times anything is past the cap
    lockout: timedelta = policy.first_lockout * (1 << doublings)
    return min(lockout, policy.longest_lockout)


def judge_pin(record: PinRecord, pin_right: bool, now: datetime,
              policy: PinPolicy = PinPolicy()) -> PinJudgement:
    """The verdict on one try from one desk phone, and its record afterwards."""
    if record.locked_until is not None and now < record.locked_until:
        return PinJudgement(PinVerdict.LOCKED_OUT, record)
    if pin_right:
        return PinJudgement(PinVerdict.ACCEPTED, PinRecord())
    failures = record.failures + 1
    lockout = lockout_after(failures, policy)
    locked_until = now + lockout if lockout is not None else None
    return PinJudgement(PinVerdict.WRONG,
                        replace(record, failures=failures, locked_until=locked_until), lockout)
