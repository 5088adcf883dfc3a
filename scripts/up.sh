#!/usr/bin/env bash
# Set up, then run Backline on the example practice until interrupted (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The AMI secret and the desk-phone PIN, made once and kept outside the clone (mode 0600), so
# the PIN stays the same from one run to the next and commands run in another terminal (doctor
# logs in to AMI) can load them: set -a; . "$secrets"; set +a.  Either one set in the
# environment wins.
state=${XDG_STATE_HOME:-$HOME/.local/state}/backline
secrets=$state/up.env
if [ ! -f "$secrets" ]; then
    mkdir -p "$state" && chmod 0700 "$state"
    (umask 077 && .venv/bin/python - > "$secrets.new" <<'PY'
import secrets
print(f"BACKLINE_AMI_SECRET={secrets.token_urlsafe(18)}")
print(f"BACKLINE_OUTAGE_PIN={secrets.randbelow(10**6):06d}")
PY
    ) && mv "$secrets.new" "$secrets"
fi
ami=${BACKLINE_AMI_SECRET:-}
pin=${BACKLINE_OUTAGE_PIN:-}
set -a
# shellcheck disable=SC1090
. "$secrets"
set +a
[ -n "$ami" ] && export BACKLINE_AMI_SECRET=$ami
if [ -n "$pin" ]; then
    export BACKLINE_OUTAGE_PIN=$pin
    echo "desk-phone outage PIN: from BACKLINE_OUTAGE_PIN" >&2
else
    echo "desk-phone outage PIN (*28 engage, *29 end, then the PIN and #): $BACKLINE_OUTAGE_PIN" >&2
fi
echo "secrets for commands in another terminal: set -a; . $secrets; set +a" >&2
exec .venv/bin/backline up "${1:-config/example.yaml}"
