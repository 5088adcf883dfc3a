"""A live reload of the practice (issue 23): the YAML read and checked again, the PBX's files
rendered, only the Asterisk modules whose files changed reloaded, and the controller's view
of the practice swapped in one step, so calls in progress keep what they were given.

A config with any problem changes nothing: the old one keeps running, and the problems are
logged and returned.  What lives in ``connections`` (ports, the journal, the relay) is read
at start only: a change there is reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backline.app import config as config_mod
from backline.core.model import Directory
from backline.core.ownership import OwnershipBook
from backline.core.records import AuditEntry

log = logging.getLogger("backline.reload")

# Which Asterisk module reads each rendered file: a changed file reloads its module only.
# Not here, so applied at Asterisk's next start: ``modules.conf`` (which modules load),
# ``manager.conf`` (the AMI user this reload speaks through) and ``cdr.conf``, which only
# change with ``connections``.
MODULE_OF_FILE: Mapping[str, str] = {
    "pjsip.conf": "res_pjsip.so",
    "pjsip_auth.conf": "res_pjsip.so",
    "extensions.conf": "pbx_config.so",
    "voicemail.conf": "app_voicemail.so",
    "geolocation.conf": "res_geolocation.so",
    "res_parking.conf": "res_parking.so",
    "musiconhold.conf": "res_musiconhold.so",
}

AUDIT_ACTION = "config.reload"

# How long Asterisk may take to confirm one module's reload (AMI ``ModuleLoad``).  Asterisk
# answers once the module has re-read its files: res_pjsip re-reads every endpoint, and on a
# loaded server that has taken seconds; nobody's call waits on it, only ops on the command.
RELOAD_WITHIN = 60.0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: ``problems`` (nothing was changed) or the files that changed, the
    modules reloaded, and what only a restart applies."""

    problems: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    restart_needed: str = ""
    files_ours: bool = True  # False under `backline run`: the PBX's files are ops' own

    @property
    def applied(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return (f"refused, nothing changed: {len(self.problems)} problem(s): "
                    + "; ".join(self.problems))
        files = ", ".join(self.changed) or "none"
        modules = ", ".join(self.modules) or "none"
        pbx = (f"PBX files changed: {files}; modules reloaded: {modules}" if self.files_ours
               else "the PBX's files are not Backline's here (`backline run`): render them "
               "(`backline render`) and reload Asterisk for phones added or removed")
        return (f"applied to the controller; {pbx}"
                + (f"; {self.restart_needed}" if self.restart_needed else ""))


class PbxFiles:
    """The PBX's files for a directory, and how a module re-reads them: ``render`` returns
    the files' texts by name; ``write`` puts the changed ones in place; ``reload_module``
    asks the PBX to re-read one module (AMI ``ModuleLoad``, ``LoadType: reload``);
    ``clips`` renders the practice's sound clips again (greetings, announcements: no module
    caches them, and no file above changes when only their words do)."""

    def __init__(self, current: Mapping[str, str],
                 render: Callable[[Directory], Mapping[str, str]],
                 write: Callable[[Mapping[str, str]], None],
                 reload_module: Callable[[str, float], Awaitable[None]],
                 clips: Callable[[Directory], None] = lambda _: None, *,
                 reload_within: float = RELOAD_WITHIN) -> None:
        self.current = dict(current)
        self._render, self._write, self._reload = render, write, reload_module
        self._clips = clips
        self.reload_within = reload_within  # seconds each module's reload may take

    async def apply(self, directory: Directory) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Render ``directory``'s clips, then its files; write and reload what changed;
        (changed files, modules).  The clips first: a new number's greeting is in place
        before the dialplan that plays it."""
        await asyncio.to_thread(self._clips, directory)
        rendered = await asyncio.to_thread(self._render, directory)
        changed = tuple(sorted(n for n, text in rendered.items()
                               if n in MODULE_OF_FILE and self.current.get(n) != text))
        if not changed:
            return (), ()
        texts = {n: rendered[n] for n in changed}
        await asyncio.to_thread(self._write, texts)
        modules = tuple(sorted({MODULE_OF_FILE[n] for n in changed}))
        for module in modules:
            await self._reload(module, self.reload_within)
        # Only now what Asterisk runs: had a reload failed or gone unconfirmed, the next
        # reload would find these files unchanged and never ask for it again.
        self.current.update(texts)
        return changed, modules


class Reloader:
    """Reloads ``path`` into a running controller: its ``book`` (which every holder shares)
    and its ``directory``; ``files`` when Backline writes the PBX's files (``backline up``)."""

    def __init__(self, path: str, controller: ReloadTarget, files: PbxFiles | None,
                 clock: Callable[[], datetime],
                 applied: Callable[[], None] = lambda: None) -> None:
        self.path = path
        self._applied = applied  # told once the new practice is in (the driver's ring set)
        self._controller = controller
        self._files = files
        self._clock = clock
        self._lock = asyncio.Lock()  # two SIGHUPs in a row: one reload after the other

    @property
    def files(self) -> PbxFiles | None:
        return self._files

    async def reload(self) -> ReloadResult:
        async with self._lock:
            result = await self._reload()
        log.warning("reload of %s: %s", self.path, result.summary())
        try:
            await asyncio.to_thread(self._controller.journal.audit, AuditEntry(
                self._clock(), "reload", AUDIT_ACTION if result.applied
                else f"{AUDIT_ACTION}.refused", result.summary()[:500]))
        except Exception:  # the reload stands; only its record is missing
            log.exception("the reload could not be audited")
        return result

    async def _reload(self) -> ReloadResult:
        try:
            loaded = await asyncio.to_thread(config_mod.load, self.path)
        except config_mod.ConfigError as exc:
            return ReloadResult(problems=tuple(str(p) for p in exc.problems))
        except OSError as exc:
            return ReloadResult(problems=(f"{self.path}: {exc.strerror}",))
        new = loaded.directory
        old = self._controller.directory
        changed: tuple[str, ...] = ()
        modules: tuple[str, ...] = ()
        if self._files is not None:
            try:
                changed, modules = await self._files.apply(new)
            except Exception as exc:
                # Files may be half written: the PBX re-reads nothing it was not told to, and
                # the controller keeps the old practice.
                log.exception("reload: the PBX's files could not be rendered or reloaded")
                return ReloadResult(problems=(f"the PBX's files: {exc}",))
        # One step, no await: the call path, the features and the desk-phone admin share the
        # book, so all see the new practice together.
        self._controller.book.take_over(OwnershipBook(new))
        self._controller.directory = new
        self._applied()
        restart = "" if new.connections == old.connections else \
            "connections changed: they apply at the next restart"
        return ReloadResult(changed=changed, modules=modules, restart_needed=restart,
                            files_ours=self._files is not None)


class _Auditing(Protocol):
    def audit(self, entry: AuditEntry) -> None: ...


class ReloadTarget(Protocol):
    """What a reload swaps in the controller (``Controller`` is one)."""

    directory: Directory

    @property
    def book(self) -> OwnershipBook: ...

    @property
    def journal(self) -> _Auditing: ...
