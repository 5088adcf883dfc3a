"""The generic half of reading the config: typed accessors over the located YAML.

A :class:`Reader` takes a field's value out of a :class:`~backline.app.yamlsource.YMap` as the
type a section wants, and when the value is wrong it records a :class:`Problem` (file, line,
field, what was expected) and carries on with a default, so one pass reports every mistake.
The sections (``people``, ``numbers``, ``connections`` ...) say what each key means.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from backline.app.yamlsource import Where, YMap, YNode, YScalar, YSeq
from backline.core import e164
from backline.core.addresses import is_private
from backline.core.connections import HostPort, Secret

T = TypeVar("T")

# Field shapes more than one section takes.
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
EMAIL = re.compile(r"[^@\s<>\"']+@[^@\s<>\"']+\.[A-Za-z]{2,}")
CALLER_ID_CHARS = re.compile(r"[A-Za-z0-9 .,'&-]*")
_SECRET_WORDS = ("secret", "password", "passwd", "token", "api_key", "apikey", "pin", "key")
_SECRET_SUFFIXES = ("_env", "_file")


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One mistake in the config, as ``FILE:LINE: FIELD: what was expected``."""

    file: str
    line: int
    field: str
    expected: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}: {prefix}{self.field}: {self.expected}"


def _is_secret_key(key: str) -> bool:
    if key.endswith(_SECRET_SUFFIXES):
        return False
    words = re.split(r"[_\-]", key.lower())
    return any(w in _SECRET_WORDS for w in words) or key.lower() in _SECRET_WORDS


class Reader:
    """Collects the problems met while the sections read; hands out typed values."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------------------------

    def problem(self, where: Where, field: str, expected: str, *, warning: bool = False) -> None:
        self.problems.append(Problem(where.file, where.line, field, expected, warning))

    def keys(self, node: YMap, field: str, allowed: Iterable[str]) -> None:
        """Report unknown keys (with a suggestion), written-in secrets and duplicate keys."""
        allowed = list(allowed)
        for key, where in node.duplicates:
            self.problem(where, join(field, key), "each key once (this one is repeated)")
        for key, (where, _) in node.entries.items():
            if key in allowed:
                continue
            if _is_secret_key(key):
                self.problem(where, join(field, key),
                             f"no secret written in the file: use {key}_env (an environment "
                             f"variable) or {key}_file (a file outside the repo)")
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(where, join(field, key),
                         f"a known key{hint}; expected one of: {', '.join(sorted(allowed))}")

    # -- typed accessors -------------------------------------------------------------------

    def mapping(self, node: YNode | None, field: str, where: Where) -> YMap | None:
        if node is None:
            return None
        if isinstance(node, YMap):
            return node
        self.problem(node.where, field, "a mapping (key: value lines)")
        return None

    def seq(self, parent: YMap, key: str, field: str) -> list[YNode]:
        node = entry(parent, key)
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return []
        if isinstance(node, YSeq):
            return node.items
        self.problem(node.where, field, "a list")
        return []

    def scalar(self, parent: YMap, key: str, field: str, kind: type[T], default: T | None,
               what: str) -> T | None:
        node = entry(parent, key)
        if node is None:
            if default is None:
                self.problem(parent.where, field, f"{what} (this field is required)")
            return default
        if isinstance(node, YScalar) and kind is str and isinstance(node.value, int | float) \
                and not isinstance(node.value, bool):
            return kind(str(node.value))  # type: ignore[call-arg]
        if isinstance(node, YScalar) and isinstance(node.value, kind) and \
                (kind is bool or not isinstance(node.value, bool)):
            return node.value
        self.problem(node.where, field, what)
        return default

    def text(self, parent: YMap, key: str, field: str, default: str | None = None,
             what: str = "text") -> str | None:
        return self.scalar(parent, key, field, str, default, what)

    def flag(self, parent: YMap, key: str, field: str, default: bool) -> bool:
        value = self.scalar(parent, key, field, bool, default, "true or false")
        return bool(value)

    def integer(self, parent: YMap, key: str, field: str, default: int | None,
                low: int, high: int) -> int | None:
        what = f"a whole number from {low} to {high}"
        value = self.scalar(parent, key, field, int, default, what)
        if value is not None and not low <= value <= high:
            node = entry(parent, key)
            self.problem(node.where if node else parent.where, field,
                         f"a whole number from {low} to {high}")
            return default
        return value

    def listed(self, parent: YMap, key: str) -> Iterator[tuple[str, YMap]]:
        """Each mapping in the list ``key`` (``users:``, ``numbers:`` ...) with its field,
        ``key[i]``; an item that is not a mapping is reported and passed over."""
        for i, item in enumerate(self.seq(parent, key, key)):
            f = f"{key}[{i}]"
            node = self.mapping(item, f, item.where)
            if node is not None:
                yield f, node

    def ident(self, node: YMap, f: str, what: str, malformed: str) -> str | None:
        """A listed item's required ``id``, in the shape ids take (:data:`_ID`); None when it
        is missing or ``malformed``."""
        ident = self.text(node, "id", f"{f}.id", None, what)
        if ident is not None and not _ID.fullmatch(ident):
            self.problem(where_of(node, "id"), f"{f}.id", malformed)
            return None
        return ident

    def listed_before(self, node: YMap, f: str, kind: str, ident: str,
                      earlier: Container[str]) -> bool:
        """True, and reported, when an earlier item of the list has the id ``ident``."""
        if ident in earlier:
            self.problem(where_of(node, "id"), f"{f}.id",
                         f"a unique {kind} id ({ident} is listed twice)")
            return True
        return False

    def strings(self, parent: YMap, key: str, field: str, pattern: re.Pattern[str] | None,
                what: str) -> list[tuple[str, Where]]:
        out: list[tuple[str, Where]] = []
        for i, item in enumerate(self.seq(parent, key, field)):
            value = item.value if isinstance(item, YScalar) else None
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
                self.problem(item.where, f"{field}[{i}]", what)
                continue
            out.append((value, item.where))
        return out

    def secret(self, parent: YMap, key: str, field: str, required: bool) -> Secret:
        env = self.text(parent, f"{key}_env", join(field, f"{key}_env"), "",
                        "the name of an environment variable")
        file = self.text(parent, f"{key}_file", join(field, f"{key}_file"), "",
                         "the path of a file outside the repo")
        if env and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
            self.problem(where_of(parent, f"{key}_env"), join(field, f"{key}_env"),
                         "an environment variable name (capitals, digits, underscores)")
        if required and not env and not file and key not in parent.entries:
            self.problem(parent.where, join(field, f"{key}_env"),
                         f"where the {key} comes from: {key}_env or {key}_file")
        return Secret(env or "", file or "")

    def host_port(self, parent: YMap, field: str, *, control: bool, default_port: int,
                  default_host: str = "127.0.0.1") -> HostPort:
        host = self.text(parent, "host", join(field, "host"), default_host,
                         "a host name or IP address") or default_host
        port = self.integer(parent, "port", join(field, "port"), default_port, 1, 65535)
        if control and not is_private(host):
            self.problem(where_of(parent, "host"), join(field, "host"),
                         "a loopback or private address: PBX control ports never face the "
                         "internet")
        return HostPort(host, port or default_port)

    def listen(self, node: YMap, f: str, default: HostPort) -> HostPort:
        """A listener's ``listen: HOST:PORT`` (``default`` when absent or malformed)."""
        listen = self.text(node, "listen", f"{f}.listen", str(default), "HOST:PORT")
        host, _, port = (listen or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.problem(where_of(node, "listen"), f"{f}.listen", "HOST:PORT, e.g. "
                         f"{default}")
            return default
        return HostPort(host, int(port))

    def sub(self, parent: YMap, key: str, field: str) -> YMap | None:
        return self.mapping(entry(parent, key), f"{field}.{key}", parent.where)

    def url(self, node: YMap, key: str, f: str) -> str:
        url = self.text(node, key, f"{f}.{key}", None, "an http:// or https:// URL") or ""
        if url and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s]*)?", url):
            self.problem(where_of(node, key), f"{f}.{key}",
                         "an http:// or https:// URL with no credentials in it")
        return url

    def e164_numbers(self, parent: YMap, key: str, field: str) -> list[str]:
        """A list of E.164 numbers, each in its canonical spelling (the wrong ones reported)."""
        numbers: list[str] = []
        for j, (text, where) in enumerate(self.strings(parent, key, field, None,
                                                       "an E.164 number")):
            try:
                numbers.append(e164.normalise(text))
            except e164.NotE164 as exc:
                self.problem(where, f"{field}[{j}]", exc.why)
        return numbers


def entry(node: YMap, key: str) -> YNode | None:
    """The value written under ``key``, or None when the key is not there."""
    found = node.entries.get(key)
    return found[1] if found else None


def where_of(node: YMap, key: str) -> Where:
    """Where ``key``'s value is written, else the mapping itself (a missing key's problem)."""
    found = node.entries.get(key)
    return found[1].where if found else node.where


def join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def unknown(kind: str, ident: str, known: dict[str, T]) -> str:
    close = difflib.get_close_matches(ident, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"a known {kind}: there is no {kind} {ident!r}{hint}"
