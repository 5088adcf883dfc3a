"""``park:``, call parking: the park extension, the slots and how long a call waits there."""

from __future__ import annotations

import re

from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap
from backline.core.dialling import EXTENSION_DIGITS
from backline.core.model import Park

DEFAULT_EXTENSION = "700"
DEFAULT_SLOTS = "701-708"
DEFAULT_TIMEOUT = 45
# Each slot is a dialplan extension and a BLF key: a few dozen cover any practice's phones.
MAX_SLOTS = 50
_EXTENSION = re.compile(EXTENSION_DIGITS)


def read_park(r: Reader, top: YMap) -> Park | None:
    """``park: {extension: "700", slots: "701-708", timeout: 45}`` (each key optional)."""
    node = r.mapping(entry(top, "park"), "park", top.where)
    if node is None:
        return None
    r.keys(node, "park", ["extension", "slots", "timeout"])
    shape = "digits like 700 (2 to 6, not starting with 0)"
    extension = r.text(node, "extension", "park.extension", DEFAULT_EXTENSION, shape) \
        or DEFAULT_EXTENSION
    if not _EXTENSION.fullmatch(extension):
        r.problem(where_of(node, "extension"), "park.extension", shape)
    text = r.text(node, "slots", "park.slots", DEFAULT_SLOTS, "a range like 701-708") \
        or DEFAULT_SLOTS
    slots = _slots(text)
    if isinstance(slots, str):
        r.problem(where_of(node, "slots"), "park.slots", slots)
        slots = ()
    elif extension in slots:
        r.problem(where_of(node, "slots"), "park.slots",
                  f"slots apart from the park extension ({extension} is both)")
    timeout = r.integer(node, "timeout", "park.timeout", DEFAULT_TIMEOUT, 1, 3600) \
        or DEFAULT_TIMEOUT
    return Park(extension, slots, timeout)


def _slots(text: str) -> tuple[str, ...] | str:
    """The slots of ``FIRST-LAST``, or what was expected."""
    first, sep, last = text.partition("-")
    expected = (f"a range like 701-708: two extensions of as many digits, the first no "
                f"greater, at most {MAX_SLOTS} slots")
    if not (sep and _EXTENSION.fullmatch(first) and _EXTENSION.fullmatch(last)
            and len(first) == len(last) and int(first) <= int(last)
            and int(last) - int(first) < MAX_SLOTS):
        return expected
    return tuple(str(n) for n in range(int(first), int(last) + 1))
