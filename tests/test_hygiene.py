"""The tests' own hygiene: what one test changes in the process must not reach the next.

An environment variable a test sets and leaves behind (a trunk password, a wrong AMI
secret) is read by every later test in the same worker, so one test's outcome would depend
on which ran before it.  Tests set variables with ``monkeypatch.setenv`` (or
``pytest.MonkeyPatch.context()`` in a helper), which restores them afterwards.  The harness
(tests/harness/) is held to the same rule: a practice or alert site it starts sets its
variables only while it runs.  So are the benches (bench/), which tests/test_bench.py runs
inside a pytest worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
BENCH = TESTS.parent / "bench"


def _writes_environ(node: ast.AST) -> bool:
    """``os.environ[...] = ...``, ``del os.environ[...]``, ``os.environ.update/setdefault/
    pop/clear(...)`` or ``os.putenv/unsetenv(...)``."""
    def is_environ(n: ast.AST) -> bool:
        return (isinstance(n, ast.Attribute) and n.attr == "environ"
                and isinstance(n.value, ast.Name) and n.value.id == "os")

    if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        if is_environ(func.value):
            return func.attr in {"update", "setdefault", "pop", "popitem", "clear"}
        return (func.attr in {"putenv", "unsetenv"} and isinstance(func.value, ast.Name)
                and func.value.id == "os")
    return False


def test_no_test_module_sets_the_environment_without_restoring_it() -> None:
    found = [f"{path.relative_to(TESTS.parent)}:{node.lineno}"
             for path in sorted([*TESTS.glob("test_*.py"), *TESTS.glob("harness/*.py"),
                                 *BENCH.glob("*.py")])
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.stmt | ast.expr) and _writes_environ(node)]
    assert found == [], f"use monkeypatch.setenv instead: {found}"
