"""The container images compose.yaml runs, built here with podman and no image registry.

No registry of images is reachable from this machine, so the base images the Dockerfiles
name are made from Debian's packages (issue 16's recipe):
- ``debian:bookworm-slim`` and ``debian:sid-slim``: ``debootstrap --variant=minbase``,
  imported with ``podman import``; the host's CA certificates
  (/usr/local/share/ca-certificates, which outgoing HTTPS here is re-signed with) added to
  each, and the sid base told to accept its mirror's Release file past its date;
- ``python:3.11-slim-bookworm`` and ``postgres:15-bookworm``: stand-ins built on the
  bookworm base (tests/containers/*.Dockerfile).

Then docker/controller.Dockerfile and docker/asterisk.Dockerfile are built from the
repository as ``backline-controller`` and ``backline-asterisk``, the names compose.yaml uses.

Every image is tagged with a digest of what it is made from (its recipe, its Dockerfile, the
files its build copies, its base's digest), in podman's own storage outside the clone, and
rebuilt only when that digest is not there yet.  A lock keeps concurrent builds (parallel
test workers, other worktrees) from building the same image twice.

``python -m tests.harness.container_images`` builds them (CI's setup does, once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STANDINS = ROOT / "tests" / "containers"
CACHE = Path("/var/cache/backline/images")
HOST_CAS = Path("/usr/local/share/ca-certificates")
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# crun fails here on setrlimit and on the hybrid cgroups; runc works.  podman's default limits
# (about a million files, four million processes) are refused here ("error setting rlimit
# type 6/7"): the limits are this process's file limit (at most 20000) and 32768 processes,
# the most runc could set on this machine (it failed at 65536 under a 96369 hard limit).
# netavark, not CNI (whose plugins Debian's podman does not pull in): static addresses,
# internal networks.
CONTAINERS_CONF_MARK = "# Written by Backline's tests/harness/container_images.py (issue 16)"


def containers_conf_text() -> str:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    limits = [f"nofile={min(nofile, 20000)}:{min(nofile, 20000)}", f"nproc={nproc}:{nproc}"]
    return f"""{CONTAINERS_CONF_MARK}: what podman needs here.
[containers]
default_ulimits = {json.dumps(limits)}

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
"""


class ImageError(Exception):
    """Building an image failed; the message carries the failing command's output tail."""


def run(argv: list[str], *, timeout: float = 1800, stdin: bytes | None = None,
        cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                          input=stdin, cwd=cwd)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace").splitlines()[-30:]
        raise ImageError(f"{' '.join(argv[:4])} ... exited {done.returncode}:\n"
                         + "\n".join(tail))
    return done.stdout.decode(errors="replace")


def ensure_podman_config() -> None:
    """Write /etc/containers/containers.conf when it is missing or ours and out of date
    (never over someone else's)."""
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed: run scripts/setup.sh")
    current = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else None
    wanted = containers_conf_text()
    if (current is None or current.startswith(CONTAINERS_CONF_MARK)) and current != wanted:
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(wanted)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def tree_bytes(*paths: Path) -> bytes:
    """Every file under ``paths`` (names and contents, sorted), caches left out."""
    out = []
    for top in paths:
        files = [top] if top.is_file() else sorted(
            p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for p in files:
            out.append(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return b"\0\0".join(out)


def host_cas() -> list[Path]:
    return sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []


def exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def tag(ref: str, *names: str) -> None:
    for name in names:
        run(["podman", "tag", ref, name])


@contextmanager
def locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Base:
    """A Debian base imported from a debootstrap root."""

    suite: str
    name: str  # the name the Dockerfiles use
    apt_conf: str = ""

    def key(self) -> str:
        return digest(self.suite.encode(), self.apt_conf.encode(),
                      *(p.read_bytes() for p in host_cas()))

    def build(self) -> str:
        ref = f"localhost/backline-base-{self.suite}:{self.key()}"
        if not exists(ref):
            with tempfile.TemporaryDirectory(prefix=f"backline-{self.suite}-",
                                             dir=CACHE) as tmp:
                root = Path(tmp) / "root"
                run(["debootstrap", "--variant=minbase", "--include=ca-certificates",
                     self.suite, str(root)])
                for ca in host_cas():
                    shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
                run(["chroot", str(root), "update-ca-certificates"])
                if self.apt_conf:
                    (root / "etc/apt/apt.conf.d/99backline").write_text(self.apt_conf)
                shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
                (root / "var/lib/apt/lists/partial").mkdir(parents=True)
                tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True,
                                     check=True).stdout
                run(["podman", "import", "--change", 'CMD ["bash"]', "-", ref], stdin=tar)
        tag(ref, f"docker.io/library/{self.name}")
        return ref


@dataclass(frozen=True)
class Built:
    """An image built from a Dockerfile; ``inputs`` are the files its build copies."""

    name: str
    dockerfile: Path
    context: Path
    inputs: tuple[Path, ...]

    def cache_name(self) -> str:
        return "localhost/backline-cache-" + self.name.rsplit("/", 1)[-1].split(":")[0]

    def build(self, base_key: str) -> str:
        key = digest(base_key.encode(), tree_bytes(self.dockerfile, *self.inputs))
        ref = f"{self.cache_name()}:{key}"
        if not exists(ref):
            run(["podman", "build", "--pull=never", "--network=host", "-f",
                 str(self.dockerfile), "-t", ref, str(self.context)])
        tag(ref, self.name)
        return ref


BOOKWORM = Base("bookworm", "debian:bookworm-slim")
SID = Base("sid", "debian:sid-slim", 'Acquire::Check-Valid-Until "false";\n')
PYTHON = Built("docker.io/library/python:3.11-slim-bookworm",
               STANDINS / "python.Dockerfile", STANDINS, ())
POSTGRES = Built("docker.io/library/postgres:15-bookworm", STANDINS / "postgres.Dockerfile",
                 STANDINS, (STANDINS / "postgres-entrypoint.sh",))
CONTROLLER = Built("localhost/backline-controller", ROOT / "docker" / "controller.Dockerfile",
                   ROOT, (ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "backline",
                          ROOT / "docker" / "controller-entrypoint.sh"))
ASTERISK = Built("localhost/backline-asterisk", ROOT / "docker" / "asterisk.Dockerfile",
                 ROOT, (ROOT / "docker" / "asterisk-entrypoint.sh",))


def build_all() -> dict[str, str]:
    """Every image compose.yaml needs, built only where its digest is not cached yet;
    returns the name compose uses -> the cached reference."""
    ensure_podman_config()
    with locked():
        bookworm = BOOKWORM.build()
        sid = SID.build()
        python = PYTHON.build(bookworm)
        built = {PYTHON.name: python,
                 POSTGRES.name: POSTGRES.build(bookworm),
                 CONTROLLER.name: CONTROLLER.build(python),
                 ASTERISK.name: ASTERISK.build(sid)}
        for built_from in (CONTROLLER, ASTERISK):
            forget_old(built_from.cache_name(), KEEP, in_use=set(built.values()))
        # A rebuild leaves the image it replaced untagged: remove those.
        run(["podman", "image", "prune", "--force"])
        return built


# Digests kept per built image: the sources change with every commit, and a few worktrees or
# branches build their own at the same time; older ones are removed.
KEEP = 4


def forget_old(repository: str, keep: int, in_use: set[str]) -> None:
    """Untag all but the ``keep`` newest digests of ``repository``, never one ``in_use``
    (an image a container still uses stays too: podman refuses, and that is fine)."""
    listed = run(["podman", "images", "--filter", f"reference={repository}", "--format",
                  "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}"])
    refs = [line.split("\t")[1] for line in sorted(listed.splitlines(), reverse=True)
            if "\t" in line]
    for ref in [r for r in refs if r not in in_use][keep:]:
        subprocess.run(["podman", "rmi", ref], capture_output=True, check=False, timeout=120)


if __name__ == "__main__":
    for name, ref in build_all().items():
        print(f"{name}: {ref}")
    sys.exit(0)
