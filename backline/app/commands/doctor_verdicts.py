"""What each of `backline doctor`'s checks says: one line, a verdict and the fix."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
WITHIN = 10.0  # seconds per peer: a doctor that hangs on a dead relay tells ops nothing


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict (``ok``, ``warn``, ``FAIL``, ``skip``), what was seen, and the fix
    ("" when ok).  Never a secret's value: only where it comes from."""

    check: str
    verdict: str
    seen: str
    fix: str = ""
