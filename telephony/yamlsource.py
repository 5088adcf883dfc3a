"""YAML with the file and line of every node kept, so that each mistake can be pointed at.

PyYAML's composer already knows where each node starts; we keep that position beside every
mapping key, sequence item and scalar instead of throwing it away as ``yaml.safe_load`` does.
``include:`` at the top of a file pulls in further files (paths relative to the including file);
their ``users``, ``teams`` and ``numbers`` are appended, and any other section may be defined once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


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


APPENDED_SECTIONS = ("users", "teams", "numbers", "locations")


def _where(file: str, node: yaml.Node) -> Where:
    return Where(file, node.start_mark.line + 1)


def _convert(file: str, node: yaml.Node, constructor: yaml.SafeLoader) -> YNode:
    if isinstance(node, yaml.MappingNode):
        ymap = YMap({}, _where(file, node))
        for key_node, value_node in node.value:
            key_where = _where(file, key_node)
            key = str(constructor.construct_object(key_node, deep=True))
            if key in ymap.entries:
                ymap.duplicates.append((key, key_where))
            ymap.entries[key] = (key_where, _convert(file, value_node, constructor))
        return ymap
    if isinstance(node, yaml.SequenceNode):
        return YSeq([_convert(file, item, constructor) for item in node.value], _where(file, node))
    value = constructor.construct_object(node, deep=True)
    return YScalar(value, _where(file, node))


def parse_file(path: Path) -> tuple[YNode | None, list[SourceError]]:
    """Parse one file into located nodes; syntax errors come back as :class:`SourceError`."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [SourceError(Where(name, 1), f"cannot read the file ({exc.strerror})")]
    except UnicodeDecodeError:
        return None, [SourceError(Where(name, 1), "the file is not UTF-8 text")]
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, [SourceError(Where(name, 1), "the file is empty")]
            return _convert(name, root, loader), []
        finally:
            loader.dispose()
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

    def visit(file: Path, included_from: Where | None) -> None:
        nonlocal merged
        resolved = file.resolve()
        if resolved in seen:
            where = included_from or Where(str(file), 1)
            errors.append(SourceError(where, f"include: {file} is included twice (or in a cycle)"))
            return
        seen.add(resolved)
        node, errs = parse_file(file)
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
