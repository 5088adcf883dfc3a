#!/usr/bin/env bash
# Set up, then run the whole test suite: ruff, mypy --strict, pytest (real Asterisk included).
# This is exactly what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest -n 2 "$@"
