"""Fixtures shared across test modules: the PostgreSQL server and the journal backends, and
the inbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.inbox_server import TOKEN, TOKEN_ENV, InboxServer

pytest_plugins = ["tests.harness.postgres"]


@pytest.fixture()
async def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InboxServer]:
    """The tests' inbox, running; its token in ``TOKEN_ENV`` (tests.harness.inbox_server) for
    the controller's ``connections.inbox.token_env``."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server = InboxServer(tmp_path / "inbox.db", token=TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
