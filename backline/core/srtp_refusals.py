"""Desk phones that refused the encrypted call they were rung with (``encryption:
required``: the SRTP-only twin's offer, backline/render/asterisk_srtp.py).  Such a phone is
registered and looks fine, yet never rings: the policy stands (the call is not offered in
the clear), so the only remedy is that someone hears of it.  Pure: the driver reads the
PBX's events into :meth:`RefusingPhones.refused` and :meth:`RefusingPhones.answered`."""

from __future__ import annotations

from collections.abc import Iterable

# What ops are told to do, in the log, on the status page and by `backline doctor`.
FIX = ("configure SRTP (SDES, over TLS) on that phone, or mark it `encryption: optional` "
       "in its desk_phones entry")


class RefusingPhones:
    """The desk phones whose last encrypted ring was refused, by name, until one answers an
    encrypted call again or the practice is reloaded (:meth:`clear`); ``names``: those the
    journal kept from before a restart."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names: set[str] = set(names)

    def refused(self, desk_phone: str) -> bool:
        """``desk_phone`` refused the encrypted offer; True when it was not refusing before
        (said loudly once, not at every call)."""
        new = desk_phone not in self._names
        self._names.add(desk_phone)
        return new

    def answered(self, desk_phone: str) -> bool:
        """``desk_phone`` answered an encrypted call: it takes SRTP now; True if it was
        listed."""
        if desk_phone not in self._names:
            return False
        self._names.discard(desk_phone)
        return True

    def clear(self) -> None:
        self._names.clear()

    def names(self) -> list[str]:
        return sorted(self._names)
