"""The README and docs/ say only what the repository has: every link, path, test, benchmark
and command they name exists, and the README's test command is the one CI runs.

A newcomer follows these pages by copying what they name; a page that names a moved module or
a renamed test sends them nowhere. Text only: nothing is imported or run but `backline --help`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A repository path: starts at a top-level folder, not inside a longer path (/var/lib/backline/…).
PATH = re.compile(r"(?<![\w./:-])(?:backline|tests|bench|scripts|config|docker|docs|\.ci)/"
                  r"[\w./-]*")
TEST_IN_FILE = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")
TEST_NAME = re.compile(r"`(test_\w+)`")
MODULE = re.compile(r"-m ((?:bench|backline)(?:\.\w+)+)")
COMMAND = re.compile(r"`(?:\.venv/bin/)?backline ([a-z]+)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", _text(page), re.MULTILINE)}


def _defined_tests() -> dict[str, set[str]]:
    return {_name(f): set(re.findall(r"^(?:async )?def (test_\w+)", _text(f), re.MULTILINE))
            for f in (ROOT / "tests").glob("test_*.py")}


def _built(text: str) -> str:
    """The page without its "Not yet" sections, which name what does not exist yet."""
    return re.sub(r"^## Not yet\n.*?(?=^## |\Z)", "", text, flags=re.MULTILINE | re.DOTALL)


def test_there_are_pages() -> None:
    assert len(PAGES) > 10, PAGES


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_names_an_existing_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(_text(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {_name(file)}")
    assert not broken, f"{_name(page)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_repository_path_named_exists(page: Path) -> None:
    missing = sorted({p.rstrip(".,") for p in PATH.findall(_text(page))
                      if not (ROOT / p.rstrip(".,")).exists()})
    assert not missing, f"{_name(page)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_test_named_is_defined(page: Path) -> None:
    defined = _defined_tests()
    everywhere = set().union(*defined.values())
    text = _text(page)
    missing = [f"{file}::{test}" for file, test in TEST_IN_FILE.findall(text)
               if test not in defined.get(file, set())]
    missing += [test for test in TEST_NAME.findall(text) if test not in everywhere]
    assert not missing, f"{_name(page)} names tests that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_module_run_with_python_m_exists(page: Path) -> None:
    missing = [m for m in MODULE.findall(_text(page))
               if not (ROOT / (m.replace(".", "/") + ".py")).exists()]
    assert not missing, f"{_name(page)} runs modules that do not exist: {missing}"


def test_every_backline_command_named_exists() -> None:
    cli = Path(sys.executable).with_name("backline")
    help_text = subprocess.run([str(cli), "--help"], capture_output=True, text=True,
                               check=True).stdout
    commands = set(re.findall(r"^    ([a-z]+)(?: |$)", help_text, re.MULTILINE))
    assert {"check", "render", "run", "up", "outage", "attempts"} <= commands, help_text
    unknown = sorted({f"{_name(page)}: backline {c}" for page in PAGES
                      for c in COMMAND.findall(_built(_text(page))) if c not in commands})
    assert not unknown, f"commands the CLI does not have: {unknown}"


def test_the_readme_commands_are_the_scripts_and_ci_runs_the_second() -> None:
    block = re.search(r"```sh\n(.*?)```", _text(ROOT / "README.md"), re.DOTALL)
    assert block is not None, "README.md has no ```sh block with the two commands"
    up, test = [line.split()[0] for line in block.group(1).splitlines()[:2]]
    assert (up, test) == ("scripts/up.sh", "scripts/test.sh")
    assert (ROOT / up).exists() and (ROOT / test).exists()
    ci = [line for line in _text(ROOT / ".ci" / "run").splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1].split()[-1] == test, f".ci/run does not end by running {test}: {ci}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve()
              for target in LINK.findall(_text(ROOT / "README.md"))}
    orphans = [_name(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"
