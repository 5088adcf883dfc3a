"""A practice inbox for the tests: a real aiohttp server on 127.0.0.1 that misbehaves.

It files each item POSTed to ``/inbox`` under its ``Idempotency-Key`` in a SQLite file
(committed before it answers, so it survives :meth:`InboxServer.restart`), answers a repeat
of a key it already filed with ``200`` and files nothing, and fires the item's ``notify``
once, when it files it.  With ``fail_rate`` it fails that share of requests, at random from a
fixed seed, in three ways spread evenly:

- ``503`` before filing anything;
- files the item, then drops the connection without answering;
- files the item, then answers ``500``.

The last two are the cases idempotency keys exist for: the client cannot know the item is
filed, and must retry without filing it twice.  ``refuse`` picks items to answer ``422``.
A ``GET`` of ``/inbox`` files nothing: 200 with the token, 401 without (docs/inbox.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.harness.alert_site import free_port

# The token of the ``inbox`` fixture's server (tests/conftest.py), and the variable that
# fixture puts it in: a practice's ``connections.inbox.token_env`` names it.
TOKEN = "inbox-token-for-the-inbox-fixture"
TOKEN_ENV = "BACKLINE_TEST_INBOX_TOKEN"


class InboxServer:
    def __init__(self, path: Path, *, fail_rate: float = 0.0, seed: int = 20261128,
                 token: str = "", refuse: Callable[[dict[str, Any]], bool] | None = None,
                 port: int = 0) -> None:
        self.path = path
        self.fail_rate = fail_rate
        self.token = token
        self.refuse = refuse or (lambda doc: False)
        self.port = port or free_port()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._conn: sqlite3.Connection | None = None  # the endpoint's, while it runs
        self._changed = asyncio.Condition()
        self.requests = 0
        self.probes = 0  # GETs of the endpoint (doctor's check), never filing anything
        self.hold: asyncio.Event | None = None  # if set: answer each POST only once it is set
        self.failures = {"before": 0, "dropped": 0, "after": 0, "refused": 0}
        self.refused_keys: Counter[str] = Counter()  # 422s answered, by idempotency key
        db = self._db()
        db.executescript(
            "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key TEXT NOT NULL UNIQUE, body TEXT NOT NULL, authorization TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS notifications (key TEXT NOT NULL, users TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS tries (key TEXT NOT NULL);")
        self._filed = int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        db.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    async def start(self) -> None:
        self._conn = self._db()
        # Survives the process (what a restart needs), not a power cut: a test server.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/inbox", self._post)
        app.router.add_get("/inbox", self._probe)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def restart(self) -> None:
        """Down and up again on the same port with the same file: what it filed stays."""
        await self.stop()
        await self.start()

    # -- what it holds -----------------------------------------------------------------------

    def items(self) -> list[dict[str, Any]]:
        """Filed items, in the order they were first filed."""
        db = self._db()
        try:
            return [json.loads(body) for (body,) in
                    db.execute("SELECT body FROM items ORDER BY seq")]
        finally:
            db.close()

    def keys(self) -> list[str]:
        db = self._db()
        try:
            return [k for (k,) in db.execute("SELECT key FROM items ORDER BY seq")]
        finally:
            db.close()

    def notifications(self) -> list[tuple[str, list[str]]]:
        db = self._db()
        try:
            return [(k, json.loads(u)) for k, u in
                    db.execute("SELECT key, users FROM notifications ORDER BY rowid")]
        finally:
            db.close()

    def count(self) -> int:
        db = self._db()
        try:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        finally:
            db.close()

    def tries(self) -> int:
        db = self._db()
        try:
            return int(db.execute("SELECT COUNT(*) FROM tries").fetchone()[0])
        finally:
            db.close()

    async def wait_for(self, count: int, within: float) -> None:
        """Until at least ``count`` items are filed (TimeoutError after ``within`` s)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self._filed >= count)

    # -- the endpoint ------------------------------------------------------------------------

    async def wait_for_requests(self, count: int, within: float) -> None:
        """Until at least ``count`` POSTs came in, answered or not (TimeoutError after
        ``within`` s)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.requests >= count)

    async def _probe(self, request: web.Request) -> web.StreamResponse:
        """Whether the token is right; nothing is filed or counted as a delivery."""
        self.probes += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"inbox": "ready"})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        async with self._changed:
            self._changed.notify_all()
        body = await request.read()
        if self.hold is not None:  # a slow inbox (a big fax on a slow link)
            await self.hold.wait()
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        doc = json.loads(body)
        roll = self._rng.random()
        share = self.fail_rate / 3
        if roll < share:
            self.failures["before"] += 1
            return web.json_response({"error": "try later"}, status=503)
        if self.refuse(doc):
            self.failures["refused"] += 1
            self.refused_keys[key] += 1
            return web.json_response({"error": "cannot file this"}, status=422)
        filed = self._file(key, body, doc, request.headers.get("Authorization", ""))
        async with self._changed:
            self._changed.notify_all()
        if roll < 2 * share:
            self.failures["dropped"] += 1
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        if roll < 3 * share:
            self.failures["after"] += 1
            return web.json_response({"error": "oops"}, status=500)
        return web.json_response({"filed": True}, status=201 if filed else 200)

    def _file(self, key: str, body: bytes, doc: dict[str, Any], authorization: str) -> bool:
        """File the item once per key (with its notification, in one commit)."""
        db = self._conn
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO tries (key) VALUES (?)", (key,))
            if db.execute("SELECT 1 FROM items WHERE key = ?", (key,)).fetchone():
                db.execute("COMMIT")
                return False
            db.execute("INSERT INTO items (key, body, authorization) VALUES (?, ?, ?)",
                       (key, body.decode(), authorization))
            notify = doc.get("notify")
            if notify is not None:
                db.execute("INSERT INTO notifications (key, users) VALUES (?, ?)",
                           (key, json.dumps(notify.get("users", []))))
            db.execute("COMMIT")
            self._filed += 1
            return True
        finally:
            if db.in_transaction:
                db.rollback()
