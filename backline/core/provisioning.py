"""Desk phones a practice has the controller provision: which vendor a model is, what a MAC
address looks like, and which file name each vendor asks for.

Pure: the loader checks a config with these, the renderer names files with them, and the
provisioning feature answers a request path with them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass


class Vendor(enum.Enum):
    YEALINK = "yealink"
    POLYCOM = "polycom"
    GRANDSTREAM = "grandstream"


# The models the renderer knows the keys of (the three families most small practices buy):
# Yealink T4x/T5x (T46U, T54W), Polycom VVX (VVX 411), Grandstream GRP (GRP2614).
_MODELS = (
    (re.compile(r"(?:yealink[ -]?)?(?:sip-)?t[45]\d[a-z]{0,2}", re.I), Vendor.YEALINK),
    (re.compile(r"(?:polycom[ -]?)?vvx ?\d{3}", re.I), Vendor.POLYCOM),
    (re.compile(r"(?:grandstream[ -]?)?grp ?\d{4}[a-z]?", re.I), Vendor.GRANDSTREAM),
)
MODELS_WHAT = "a Yealink T4x/T5x, Polycom VVX or Grandstream GRP model (T46U, VVX 411, GRP2614)"

_MAC = re.compile(r"[0-9a-f]{2}(?:([:-]?)[0-9a-f]{2})(?:\1[0-9a-f]{2}){4}")


def vendor_of(model: str) -> Vendor | None:
    """The vendor of ``model`` as written in the config, or None for a model not known."""
    for pattern, vendor in _MODELS:
        if pattern.fullmatch(model.strip()):
            return vendor
    return None


def normal_mac(text: str) -> str | None:
    """``text`` as twelve lowercase hex digits (the form every vendor's file name uses), from
    ``00:15:65:AA:BB:CC``, ``00-15-65-aa-bb-cc`` or ``001565aabbcc``; None if malformed."""
    text = text.strip().lower()
    return text.replace(":", "").replace("-", "") if _MAC.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class ProvisionedPhone:
    """A desk phone the controller provisions: its name, MAC (normalised) and model."""

    desk_phone: str
    mac: str
    model: str

    @property
    def vendor(self) -> Vendor:
        vendor = vendor_of(self.model)
        assert vendor is not None, "the loader refuses an unknown model"
        return vendor


def file_names(phone: ProvisionedPhone) -> tuple[str, ...]:
    """The paths the phone requests, first the one that holds its account.

    Yealink asks for ``<mac>.cfg``; Polycom for the master file ``<mac>.cfg`` and then the
    files it lists (``phone<mac>.cfg`` here); Grandstream for ``cfg<mac>.xml``."""
    match phone.vendor:
        case Vendor.YEALINK:
            return (f"{phone.mac}.cfg",)
        case Vendor.POLYCOM:
            return (f"phone{phone.mac}.cfg", f"{phone.mac}.cfg")
        case Vendor.GRANDSTREAM:
            return (f"cfg{phone.mac}.xml",)


# What a phone asks for on every boot besides its own file: Yealink's common file
# (y0000000000NN.cfg, by model), Polycom's default master file (000000000000.cfg), and
# Grandstream's model and generic files (cfggrp2614.xml, cfg.xml).  Not served (the account
# is in the phone's own file), but answered 404 as ordinary, not counted as guessing.
_COMMON_FILE = re.compile(r"y0{10}\d{2}\.cfg|0{12}\.cfg|cfg(?:grp\d{4}[a-z]?)?\.xml")


def common_file(name: str) -> bool:
    """Whether ``name`` is a file every phone of a vendor asks for (see _COMMON_FILE)."""
    return _COMMON_FILE.fullmatch(name.lower()) is not None


def phone_for_path(phones: Iterable[ProvisionedPhone], name: str
                   ) -> ProvisionedPhone | None:
    """The phone whose file ``name`` is (case-insensitive, as phones vary), or None."""
    name = name.lower()
    for phone in phones:
        if name in file_names(phone):
            return phone
    return None
