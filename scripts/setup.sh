#!/usr/bin/env bash
# Set up everything Backline needs on a Debian 12 machine, idempotently:
# Debian packages, the Python virtualenv in .venv, and the Asterisk root (built once with
# debootstrap into a cache outside the clone, reused after that); with --images, the container
# images too (podman's storage, outside the clone; rebuilt only when their sources change).
# Usage: scripts/setup.sh [--no-asterisk] [--images]
set -euo pipefail
cd "$(dirname "$0")/.."

want_asterisk=1
want_images=0
for arg in "$@"; do
  case "$arg" in
    --no-asterisk) want_asterisk=0 ;;
    --images) want_images=1 ;;
    *) echo "usage: scripts/setup.sh [--no-asterisk] [--images]" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian packages (only what is missing; apt-get update only when something is).
mapfile -t pkgs < <(grep -v '^\s*#' scripts/debian-packages.txt | grep -v '^\s*$')
python_bin=${PYTHON:-python3}
if ! "$python_bin" -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  pkgs+=(python3 python3-venv)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}; run this as root (or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Kamailio and PostgreSQL are here for the tests, which start their own on free loopback
  # ports. On a host run by systemd their packages also start system services; Debian's stock
  # Kamailio would take SIP port 5060 from the Asterisk that up.sh starts.
  if [[ " ${missing[*]} " == *" kamailio "* ]] && [ -d /run/systemd/system ]; then
    say "disabling the stock kamailio service (the tests start their own)"
    systemctl disable --now kamailio >/dev/null 2>&1 || true
  fi
fi

# 2. The virtualenv, reinstalled only when pyproject.toml changes.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python_bin" -m venv .venv
fi
stamp=.venv/.backline-installed
digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  say "installing Backline and its Python dependencies into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$digest" > "$stamp"
fi
# The install can go stale with pyproject.toml unchanged (a clone moved, an entry point edited
# by hand, an interrupted install): reinstall this package alone when `backline` does not import
# from this directory or its console script names another function than pyproject.toml does.
if ! .venv/bin/python -I - <<'PY'
import importlib.metadata, pathlib, sys, tomllib
here = pathlib.Path.cwd().resolve()
want = tomllib.loads((here / "pyproject.toml").read_text())["project"]["scripts"]
have = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
        if e.dist is not None and e.dist.name == "backline"}
import backline
inside = pathlib.Path(backline.__file__).resolve().is_relative_to(here)
sys.exit(0 if inside and have == want and (here / ".venv/bin/backline").exists() else 1)
PY
then
  say "refreshing the editable install of Backline in .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
fi

# 3. The Asterisk root (Debian unstable's Asterisk 22, run with chroot on loopback).
if [ "$want_asterisk" = 1 ] && [ -f backline/localpbx/pbxroot.py ]; then
  .venv/bin/python -m backline.localpbx.pbxroot >/dev/null
fi
# 4. The container images tests/test_container_stack.py runs (CI builds them here, before the
# tests: the first build takes minutes, after that only what changed is rebuilt).
if [ "$want_images" = 1 ]; then
  say "building the container images (cached by digest in podman's storage)"
  .venv/bin/python -m tests.harness.container_images >/dev/null
fi
say "ready"
