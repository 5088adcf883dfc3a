"""The mode as each PBX keeps it: four keys (``backline/mode``, ``ack``, ``by``, ``reason``)
that its dialplan reads when the controller is away and its console writes, and the desk
phones' lamp.  How a key is read, written and deleted is the driver's (AstDB over AMI,
mod_db over ESL); what the keys mean is here, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from backline.core.outage import Mode
from backline.pbx import names


class ModeKeys(ABC):
    """The controller's mode mirror on a PBX (``backline.app.controller.ModeMirror``)."""

    @abstractmethod
    async def _get(self, key: str) -> str | None:
        """The key's value, None if it is not set."""

    @abstractmethod
    async def _put(self, key: str, value: str) -> None: ...

    @abstractmethod
    async def _delete(self, key: str) -> None:
        """Delete the key; one already gone is fine."""

    @abstractmethod
    async def light_lamp(self, mode: Mode) -> None:
        """Every desk phone's outage lamp on (outage) or off."""

    async def read_mode(self) -> tuple[str | None, str | None, str | None, str | None]:
        """The PBX's mode, our last agreement, and who/why if set from the console."""
        return (await self._get(names.MODE), await self._get(names.ACK),
                await self._get(names.BY), await self._get(names.REASON))

    async def forget_console_note(self) -> None:
        """Delete the console's ``by`` and ``reason`` (that switch's, not the next's)."""
        for key in (names.BY, names.REASON):
            await self._delete(key)

    async def write_mode(self, mode: Mode, *, ack_only: bool = False) -> None:
        """Agree on ``mode`` with the PBX (its dialplan reads the mode key) and light every
        desk phone's lamp to match."""
        if not ack_only:
            await self._put(names.MODE, mode.value)
        await self._put(names.ACK, mode.value)
        await self.light_lamp(mode)
