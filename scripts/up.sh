#!/usr/bin/env bash
# Set up, then run Backline on the example practice until interrupted (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export BACKLINE_AMI_SECRET=${BACKLINE_AMI_SECRET:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
# The PIN an admin's desk phone dials after *28 (engage) or *29 (end), then #: digits only.
if [ -z "${BACKLINE_OUTAGE_PIN:-}" ]; then
    BACKLINE_OUTAGE_PIN=$(.venv/bin/python -c 'import secrets; print(f"{secrets.randbelow(10**6):06d}")')
    export BACKLINE_OUTAGE_PIN
    echo "desk-phone outage PIN (*28 engage, *29 end, then the PIN and #): $BACKLINE_OUTAGE_PIN" >&2
else
    echo "desk-phone outage PIN: from BACKLINE_OUTAGE_PIN" >&2
fi
exec .venv/bin/backline up "${1:-config/example.yaml}"
