#!/usr/bin/env bash
# Set up, then run Backline on the example practice until interrupted (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export BACKLINE_AMI_SECRET=${BACKLINE_AMI_SECRET:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
exec .venv/bin/backline up "${1:-config/example.yaml}"
