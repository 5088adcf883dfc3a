"""The folder tree is the architecture: this test keeps its arrows pointing down.

It reads every module under ``backline/`` with :mod:`ast` (nothing is imported, so a broken
module fails here with its file and line, not with an ImportError), and checks:

- ``core`` imports nothing of Backline's outside itself, and none of the modules that would
  let it wait, talk or store (asyncio, socket, sqlite3, aiohttp, threading);
- ``render`` imports none of those either, nor what would write files or run programs;
- the two drivers (``pbx.asterisk``, ``pbx.freeswitch``) never import each other;
- no feature imports a driver;
- every import goes to the same layer or one below (``RANK``), except the few listed in
  ``KNOWN_UPWARD``, which the next step removes (that list may only shrink);
- there is no import cycle among Backline's modules.

An import counts wherever it is written: at the top, inside a function (lazy), or under
``if TYPE_CHECKING``: a lazy import is still a dependency, and a cycle through one is still a
cycle.  ``from a.b import c`` depends on ``a.b`` and, if it is a module, on ``a.b.c``, the same
reading as /work/shared/tools/import-cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "backline"

# Higher may import lower or equal, never higher.  Each driver names its PBX in one constants
# module (pbx/asterisk/dialplan_variables.py, pbx/freeswitch/names.py) that the renderers read,
# so render sits just above the drivers; no driver reads a renderer, and the renderers write
# nothing (test_render_writes_and_runs_nothing): localpbx/ writes what they make.
RANK = {
    "core": 0,
    "fax": 1,
    "journal": 2,
    "pbx": 3,  # the ports and the shared call path
    "pbx.asterisk": 4,
    "pbx.freeswitch": 4,
    "render": 5,
    "localpbx": 6,
    "features": 7,
    "app": 8,
    "": 8,  # backline/__init__.py
}
# Imports that point up today, each with the step that removes it.  May only shrink.
KNOWN_UPWARD = {
    # Features and the local Asterisk read the secrets the config names themselves; once the
    # controller is split into features (build(context) -> Feature), the app hands them over.
    ("features.alerts.service", "app.secrets"),
    ("features.inbox.service", "app.secrets"),
    ("features.sms.auto_replies", "app.secrets"),
    ("localpbx.asterisk", "app.secrets"),
}
FORBIDDEN_IN_CORE = {"asyncio", "socket", "sqlite3", "aiohttp", "threading"}
# The renderers are pure functions of the directory: text out, nothing written or run (the
# local PBX's setup, localpbx/, writes what they make and renders the audio).
FORBIDDEN_IN_RENDER = FORBIDDEN_IN_CORE | {"subprocess", "tempfile", "shutil", "os"}
DRIVERS = ("pbx.asterisk", "pbx.freeswitch")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, without the "backline." prefix ("" for the package)
    target: str  # imported module as written and resolved (absolute, dotted)
    line: int

    def where(self) -> str:
        path = modules()[self.source]
        return f"{path.relative_to(ROOT)}:{self.line}"


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT / PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


_MODULES: dict[str, Path] = {}


def modules() -> dict[str, Path]:
    if not _MODULES:
        for path in sorted((ROOT / PACKAGE).rglob("*.py")):
            _MODULES[_name(path)] = path
    return _MODULES


def imports() -> Iterator[Import]:
    """Every import in every module, absolute, with Backline's own prefix removed."""
    known = modules()
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    parts = f"{PACKAGE}.{package}".strip(".").split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                yield Import(name, base, node.lineno)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full.removeprefix(f"{PACKAGE}.") in known:
                        yield Import(name, full, node.lineno)


def own(target: str) -> str | None:
    """The Backline module ``target`` names (without the prefix), or None if it is not ours."""
    if target == PACKAGE:
        return ""
    if target.startswith(f"{PACKAGE}."):
        return target.removeprefix(f"{PACKAGE}.")
    return None


def layer(module: str) -> str:
    """The longest RANK key that is ``module`` or a package above it."""
    best = ""
    for key in RANK:
        if key and (module == key or module.startswith(f"{key}.")) and len(key) > len(best):
            best = key
    return best


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules()}
    for imp in imports():
        target = own(imp.target)
        if target is not None and target in modules() and target != imp.source:
            edges[imp.source].add(target)
    return edges


def test_every_module_is_in_a_layer() -> None:
    # A new top-level folder must be placed in RANK on purpose, not fall into "app".
    strays = [m for m in modules() if m and layer(m) == ""]
    assert strays == []


def test_core_imports_nothing_outside_itself() -> None:
    bad = []
    for imp in imports():
        if layer(imp.source) != "core":
            continue
        target = own(imp.target)
        top = imp.target.split(".")[0]
        if target is not None and layer(target) != "core":
            bad.append(f"{imp.where()}: imports {imp.target}")
        elif top in FORBIDDEN_IN_CORE:
            bad.append(f"{imp.where()}: imports {imp.target} (core does no I/O)")
    assert bad == []


def test_render_writes_and_runs_nothing() -> None:
    bad = [f"{imp.where()}: imports {imp.target}" for imp in imports()
           if layer(imp.source) == "render" and imp.target.split(".")[0] in FORBIDDEN_IN_RENDER]
    assert bad == []


def test_drivers_never_import_each_other() -> None:
    bad = []
    for imp in imports():
        target = own(imp.target)
        if target is None:
            continue
        mine, theirs = layer(imp.source), layer(target)
        if mine in DRIVERS and theirs in DRIVERS and mine != theirs:
            bad.append(f"{imp.where()}: {mine} imports {imp.target}")
    assert bad == []


def test_features_never_import_a_driver() -> None:
    bad = [f"{imp.where()}: imports {imp.target}" for imp in imports()
           if layer(imp.source) == "features" and (t := own(imp.target)) is not None
           and layer(t) in DRIVERS]
    assert bad == []


def test_imports_point_down() -> None:
    bad, used = [], set()
    for imp in imports():
        target = own(imp.target)
        if target is None or target not in modules():
            continue
        if RANK[layer(target)] > RANK[layer(imp.source)]:
            if (imp.source, target) in KNOWN_UPWARD:
                used.add((imp.source, target))
            else:
                bad.append(f"{imp.where()}: {layer(imp.source) or PACKAGE} imports "
                           f"{imp.target} ({layer(target)}, a higher layer)")
    assert bad == []
    # An exception nobody needs any more must leave the list, so that it only shrinks.
    assert sorted(KNOWN_UPWARD - used) == []


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checks_see_imports() -> None:
    # Guard against a test that passes because it reads nothing: the controller imports the
    # journal, and a lazy import inside a function is seen.
    edges = graph()
    assert "journal" in edges["app.controller"]
    assert any(imp.line > 0 and imp.source == "app.serve" and own(imp.target) is not None
               for imp in imports())
    assert len(modules()) > 90
