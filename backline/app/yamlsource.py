"""YAML with the file and line of every node kept, so that each mistake can be pointed at.

PyYAML's composer already knows where each node starts; we keep that position beside every
mapping key, sequence item and scalar instead of throwing it away as ``yaml.safe_load`` does.
``include:`` at the top of a file pulls in further files (paths relative to the including file);
their ``users``, ``teams`` and ``numbers`` are appended, and any other section may be defined once.

Everything is bounded (file size and count, nesting, aliases and what they expand to, integer
digits), so a hostile or mistaken file ends in a located error within a second, never in a
traceback, a stack overflow or memory exhaustion.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# A practice's config is a few kilobytes; these leave two orders of magnitude of room.
MAX_BYTES = 1024 * 1024  # the config and everything it includes, in all
MAX_FILES = 20
MAX_DEPTH = 32  # PyYAML's composer recurses per level: deep nesting would overflow the stack
MAX_ALIASES = 100  # per file
MAX_NODES = 50_000  # per load, each alias counted again for every copy it makes
MAX_INT_DIGITS = 18  # Python refuses to read integers over 4,300 digits, with a traceback
_INT_LIMIT = 10**MAX_INT_DIGITS


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class YScalar:
    value: object
    where: Where


@dataclass(slots=True)
class YSeq:
    items: list[YNode]
    where: Where


@dataclass(slots=True)
class YMap:
    """A mapping: ``entries`` maps each key to (where the key is, its value)."""

    entries: dict[str, tuple[Where, YNode]]
    where: Where
    duplicates: list[tuple[str, Where]] = field(default_factory=list)


YNode = YScalar | YSeq | YMap


@dataclass(frozen=True, slots=True)
class SourceError:
    """A file could not be read or parsed at all."""

    where: Where
    message: str
    field: str = "file"


class _Refused(Exception):
    """A bound was crossed, or a value cannot be read, at ``where``."""

    def __init__(self, where: Where, field: str, message: str) -> None:
        super().__init__(message)
        self.error = SourceError(where, message, field)


class _Unreadable(Exception):
    """A scalar constructor's refusal; :func:`_convert` adds where and which field."""


@dataclass(slots=True)
class _Budget:
    """What one load may still spend, across the config and its includes."""

    files: int = MAX_FILES
    bytes: int = MAX_BYTES
    composed: int = MAX_NODES
    converted: int = MAX_NODES


def _construct_int(constructor: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    what = (f"a whole number of at most {MAX_INT_DIGITS} digits (quote it if it is text)")
    if len(str(node.value)) > 2 * MAX_INT_DIGITS:
        raise _Unreadable(what)
    value = yaml.SafeLoader.construct_yaml_int(constructor, node)
    if not -_INT_LIMIT < value < _INT_LIMIT:
        raise _Unreadable(what)
    return value


def _construct_timestamp(constructor: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    # Nothing in the config is a date; as text, 2024-02-30 is a name like any other
    # instead of a ValueError out of datetime.
    return str(constructor.construct_scalar(node))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops at :data:`MAX_DEPTH` levels, :data:`MAX_ALIASES` aliases and the
    load's node budget while composing, before the stack or memory give out."""

    def __init__(self, text: str, file: str, budget: _Budget) -> None:
        super().__init__(text)
        self._file = file
        self._budget = budget
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        where = Where(self._file, event.start_mark.line + 1)
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(where, "file", f"at most {MAX_ALIASES} aliases (*name) in a file")
            return super().compose_node(parent, index)
        self._budget.composed -= 1
        if self._budget.composed < 0:
            raise _Refused(where, "file", f"at most {MAX_NODES} values in all")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(where, "file", f"at most {MAX_DEPTH} levels of nesting")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


APPENDED_SECTIONS = ("users", "teams", "numbers", "locations")


def _where(file: str, node: yaml.Node) -> Where:
    return Where(file, node.start_mark.line + 1)


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _scalar(file: str, node: yaml.Node, loader: _BoundedLoader, field: str) -> object:
    try:
        return loader.construct_object(node, deep=True)
    except _Unreadable as exc:
        raise _Refused(_where(file, node), field or "file", str(exc)) from None
    except (ValueError, LookupError):
        # An explicit tag the text does not fit (!!int abc, !!bool maybe, an empty !!int).
        raise _Refused(_where(file, node), field or "file",
                       f"a value that fits its tag {node.tag}") from None


def _convert(file: str, node: yaml.Node, loader: _BoundedLoader, field: str,
             budget: _Budget, inside: set[int]) -> YNode:
    """Located nodes for ``node``; an alias is copied, each copy spending the budget."""
    where = _where(file, node)
    budget.converted -= 1
    if budget.converted < 0:
        raise _Refused(where, field or "file", f"at most {MAX_NODES} values in all, each "
                       "*alias counting again every value of its &anchor")
    if id(node) in inside:
        raise _Refused(where, field or "file", "no *alias inside its own &anchor (it would "
                       "repeat the value that contains it without end)")
    if isinstance(node, yaml.MappingNode):
        inside.add(id(node))
        ymap = YMap({}, where)
        for key_node, value_node in node.value:
            key_where = _where(file, key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(key_where, field or "file", "a plain key, not a list or mapping")
            key = str(_scalar(file, key_node, loader, field))
            if key in ymap.entries:
                ymap.duplicates.append((key, key_where))
            ymap.entries[key] = (key_where, _convert(file, value_node, loader, _join(field, key),
                                                     budget, inside))
        inside.discard(id(node))
        return ymap
    if isinstance(node, yaml.SequenceNode):
        inside.add(id(node))
        items = [_convert(file, item, loader, f"{field}[{i}]", budget, inside)
                 for i, item in enumerate(node.value)]
        inside.discard(id(node))
        return YSeq(items, where)
    return YScalar(_scalar(file, node, loader, field), where)


def _read(path: Path, budget: _Budget) -> str:
    """The text of ``path`` if it is a regular file within the load's byte budget.

    Opened without blocking and checked with fstat before reading, so that a FIFO, a device
    such as /dev/zero or a directory is refused instead of read forever.  Raises ValueError
    saying what was expected."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("a regular file (not a device, FIFO, socket or directory)")
        too_big = (f"at most {MAX_BYTES // 1024} KiB of config in all, the config and its "
                   f"includes ({max(budget.bytes, 0)} bytes were left)")
        if info.st_size > budget.bytes:
            raise ValueError(f"{too_big}: this file is {info.st_size} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(budget.bytes + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from None
    finally:
        os.close(fd)
    budget.bytes -= len(data)
    if budget.bytes < 0:  # it grew after fstat
        raise ValueError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None


def parse_file(path: Path, budget: _Budget | None = None,
               included_from: Where | None = None) -> tuple[YNode | None, list[SourceError]]:
    """Parse one file into located nodes; syntax errors and crossed bounds come back as
    :class:`SourceError`.  A file that cannot be read is reported where it is included."""
    name = str(path)
    budget = budget or _Budget()
    try:
        text = _read(path, budget)
    except ValueError as exc:
        if included_from is not None:
            return None, [SourceError(included_from, f"{name}: {exc}", "include")]
        return None, [SourceError(Where(name, 1), str(exc))]
    try:
        loader = _BoundedLoader(text, name, budget)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, [SourceError(Where(name, 1), "the file is empty")]
            return _convert(name, root, loader, "", budget, set()), []
        finally:
            loader.dispose()
    except _Refused as exc:
        return None, [exc.error]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "invalid YAML"
        return None, [SourceError(Where(name, line), f"YAML syntax error: {problem}")]
    except yaml.YAMLError as exc:
        return None, [SourceError(Where(name, 1), f"YAML error: {exc}")]


def load_with_includes(path: Path) -> tuple[YMap | None, list[SourceError]]:
    """Parse ``path`` and every file it includes into one top-level mapping."""
    errors: list[SourceError] = []
    merged: YMap | None = None
    seen: set[Path] = set()
    budget = _Budget()

    def visit(file: Path, included_from: Where | None) -> None:
        nonlocal merged
        try:
            resolved = file.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
            where = included_from or Where(str(file), 1)
            errors.append(SourceError(where, f"{file}: a path that resolves to a file",
                                      "include"))
            return
        if resolved in seen:
            where = included_from or Where(str(file), 1)
            errors.append(SourceError(where, f"include: {file} is included twice (or in a cycle)"))
            return
        budget.files -= 1
        if budget.files < 0:
            where = included_from or Where(str(file), 1)
            errors.append(SourceError(where, f"at most {MAX_FILES} files in all, the config "
                                      "and its includes", "include"))
            return
        seen.add(resolved)
        node, errs = parse_file(file, budget, included_from)
        errors.extend(errs)
        if node is None:
            return
        if not isinstance(node, YMap):
            errors.append(SourceError(node.where, "the file must be a mapping of sections "
                                      "(practice:, users:, numbers:, ...)"))
            return
        include = node.entries.pop("include", None)
        if merged is None:
            merged = node
        else:
            _merge_into(merged, node, errors)
        if include is None:
            return
        _, value = include
        names = value.items if isinstance(value, YSeq) else [value]
        for item in names:
            if not isinstance(item, YScalar) or not isinstance(item.value, str):
                errors.append(SourceError(item.where, "include: expected a file path or a list "
                                          "of file paths"))
                continue
            visit(file.parent / item.value, item.where)

    visit(path, None)
    return merged, errors


def _merge_into(top: YMap, extra: YMap, errors: list[SourceError]) -> None:
    for key, (key_where, value) in extra.entries.items():
        if key not in top.entries:
            top.entries[key] = (key_where, value)
            continue
        _, existing = top.entries[key]
        if key in APPENDED_SECTIONS and isinstance(existing, YSeq) and isinstance(value, YSeq):
            existing.items.extend(value.items)
        else:
            errors.append(SourceError(key_where, f"{key}: already defined at "
                                      f"{top.entries[key][0]}; only users, teams and numbers "
                                      "may be spread over several files"))
    top.duplicates.extend(extra.duplicates)
