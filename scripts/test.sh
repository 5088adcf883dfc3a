#!/usr/bin/env bash
# Set up (the container images included), then run the whole test suite: ruff, mypy --strict,
# pytest (real Asterisk and the compose stack included).
# This is exactly what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --images
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest -n 2 --dist loadgroup "$@"
