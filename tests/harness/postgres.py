"""A real PostgreSQL server for the tests, from Debian's packages, in a temporary directory.

``PostgresServer`` runs ``initdb`` and ``postgres`` as an unprivileged user (PostgreSQL refuses
root: under root the ``postgres`` system user the Debian package creates), listening on a free
loopback port and on a unix socket inside its own directory, and stops it by PID.  Journals
connect over TCP as the role ``backline`` with a password, which libpq reads from a password
file named by ``PGPASSFILE``: the same way a production controller gets it (never in the URL).

As a pytest plugin (``tests/conftest.py``): one server per xdist worker (session scope), a fresh
database per test, and ``journal_backend`` parametrising a test over SQLite and PostgreSQL.
Missing PostgreSQL binaries FAIL the tests that need them, naming the package: CI installs it
with scripts/setup.sh, and a silently skipped backend is not tested.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness.alert_site import free_port

ROLE = "backline"
STARTUP_SECONDS = 60.0


class PostgresMissing(RuntimeError):
    """The server binaries are not installed."""


class PortTaken(RuntimeError):
    """The postmaster could not bind its TCP port: someone took it after we picked it."""


# What postgres logs when its listen port is in use (it then exits: no TCP socket at all).
_BIND_FAILED = re.compile(r"could not bind IPv4 address|could not create any TCP/IP sockets|"
                          r"Address already in use")


def server_binaries() -> Path:
    """The bin directory holding ``initdb`` and ``postgres`` (the newest Debian version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin "
        "or on PATH: install the Debian package `postgresql` (scripts/setup.sh does)")


@dataclass(frozen=True)
class RunAs:
    """Who the server runs as: ourselves, or (under root) the ``postgres`` system user."""

    uid: int
    gid: int

    @classmethod
    def pick(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid())
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing("running as root, and there is no `postgres` system user to "
                                  "run PostgreSQL as (the Debian package `postgresql` creates "
                                  "it)") from None
        return cls(user.pw_uid, user.pw_gid)

    def popen_args(self) -> dict[str, Any]:
        if self.uid == os.geteuid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class PostgresServer:
    """One PostgreSQL cluster in ``root`` (created here), started and stopped by PID."""

    def __init__(self, root: Path, *, settings: dict[str, str] | None = None) -> None:
        self.bin = server_binaries()
        self.run_as = RunAs.pick()
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "run"
        self.log_path = root / "postgres.log"
        self.passfile = root / "pgpass"
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.settings = settings or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._databases = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self) -> None:
        """initdb: password auth over TCP, trust only on our private unix socket."""
        for d in (self.root, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.run_as.uid, self.run_as.gid)
            d.chmod(0o700)
        pwfile = self.root / "initpw"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")  # the superuser's; never used
        os.chown(pwfile, self.run_as.uid, self.run_as.gid)
        pwfile.chmod(0o600)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--pwfile", str(pwfile), "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
                   "--no-sync"])
        pwfile.unlink()
        self._write_passfile()

    def _write_passfile(self) -> None:
        """Our password file, for libpq in this process and the subprocesses it starts."""
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{ROLE}:{self.password}\n")
        self.passfile.chmod(0o600)

    def start(self, attempts: int = 5) -> None:
        """Start the postmaster.  The port was picked free before initdb ran (seconds ago):
        another xdist worker may have taken it since, so a failure to bind moves to a fresh
        port (and rewrites the password file, which names it) and tries again."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return
            except PortTaken:
                if attempt == attempts:
                    raise
                self.port = free_port()
                self._write_passfile()

    def _start_once(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                   "unix_socket_directories": str(self.socket_dir), "max_connections": "60",
                   "shared_buffers": "32MB", **self.settings}
        args = [str(self.bin / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        log = self.log_path.open("ab")
        os.chown(self.log_path, self.run_as.uid, self.run_as.gid)
        # Its own process group: `crash()` SIGKILLs the postmaster and its backends together.
        self.process = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        process_group=0, env=self._env(),
                                        **self.run_as.popen_args())
        log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """Until the server answers a connection, or fail with its log (no fixed sleep)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if _BIND_FAILED.search(self._log_since_start()):
                    raise PortTaken(f"port {self.port} was taken before postgres bound it")
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            try:
                with self.admin():
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.05)  # polling interval of the readiness check, not a wait
        raise RuntimeError(f"postgres did not accept connections within {STARTUP_SECONDS}s "
                           f"({last}):\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM-free fast shutdown (SIGINT) of the postmaster we started, then wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend: a power cut as far as PostgreSQL can tell
        short of one (what it wrote to the OS survives; what sat in its buffers does not)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    # -- databases ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection over the unix socket (trusted, in our private directory)."""
        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                             dbname=dbname, autocommit=True, connect_timeout=5) as conn:
            yield conn

    def create_role(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")

    def new_database(self, label: str = "") -> str:
        """A fresh empty database owned by ``backline``; returns its journal URL."""
        stem = re.sub(r"[^a-z0-9]+", "_", label.lower())[:40].strip("_")
        name = f"j{next(self._databases)}_{stem}" if stem else f"j{next(self._databases)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    # -- helpers -----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                "HOME": str(self.root)}

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(args, capture_output=True, text=True, env=self._env(),
                              timeout=120, check=False, **self.run_as.popen_args())
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def running_server(*, settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """A started server with the ``backline`` role, in a fresh directory, stopped and removed
    afterwards.  Not pytest's tmp_path: its parents are root-only, and the server is not root."""
    server_binaries()
    RunAs.pick()
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="backline-pg-")), settings=settings)
    try:
        server.init()
        server.start()
        server.create_role()
        yield server
    finally:
        server.stop()
        server.cleanup()


# -- pytest plugin ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL per xdist worker; libpq finds its password through ``PGPASSFILE``."""
    try:
        server_binaries()
        RunAs.pick()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with running_server() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSFILE", str(server.passfile))
        mp.delenv("PGPASSWORD", raising=False)
        yield server


@dataclass(frozen=True)
class JournalBackend:
    """Where a test's journal lives, and a way to reach its database directly."""

    name: str
    url: str
    sqlite_path: Path | None = None

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the journal (``?`` placeholders) and commit it."""
        if self.sqlite_path is not None:
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as db, db:
                return list(db.execute(sql, params).fetchall())
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_backend(request: pytest.FixtureRequest, tmp_path: Path) -> JournalBackend:
    """The test once on an SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "journal.db"
        return JournalBackend("sqlite", f"sqlite://{path}", path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return JournalBackend("postgresql", server.new_database(request.node.name))
