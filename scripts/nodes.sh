#!/usr/bin/env bash
# Two Asterisk nodes behind Kamailio as the desk phones' registrar, on one machine, for anyone
# who wants to see several nodes work (issue 16).  Needs root (network namespaces), the
# repository's .venv and the Asterisk root (scripts/setup.sh), and Debian's kamailio,
# kamailio-postgres-modules and postgresql (scripts/debian-packages.txt).
#
#   sudo scripts/nodes.sh           # start everything, print where it is, run until Ctrl-C
#   sudo scripts/nodes.sh --demo    # also register two SIPp desk phones through Kamailio,
#                                   # place carrier calls (each rings both phones, whichever
#                                   # node took it), SIGKILL node a, call again; then stop
#
# Three network namespaces, named per run: `hub` (10.201.N.1: Kamailio on 5060, PostgreSQL on
# 5432, the carrier and the phones), `a` (10.201.N.11) and `b` (10.201.N.12), each running
# `backline up` (its own Asterisk and controller) for node-a and node-b of one practice.
# Everything is stopped and the namespaces removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=0
[[ "${1:-}" == "--demo" ]] && DEMO=1
[[ $(id -u) -eq 0 ]] || { echo "nodes.sh: run as root (network namespaces)" >&2; exit 2; }
for tool in ip kamailio runuser; do
    command -v "$tool" >/dev/null || { echo "nodes.sh: $tool is missing" >&2; exit 2; }
done
PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)
[[ -x "$PGBIN/postgres" ]] || { echo "nodes.sh: install postgresql" >&2; exit 2; }
[[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/db_postgres.so ]] || \
    { echo "nodes.sh: install kamailio-postgres-modules" >&2; exit 2; }

RUN=$(mktemp -d /tmp/backline-nodes.XXXXXX)
chmod 755 "$RUN"
TAG="bln$$"
HUB="$TAG-hub" A="$TAG-a" B="$TAG-b"
NET="10.201.$((RANDOM % 200 + 20))"
HUB_IP="$NET.1" A_IP="$NET.11" B_IP="$NET.12"
PIDS=()

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null
    done
    for ns in "$A" "$B" "$HUB"; do ip netns del "$ns" 2>/dev/null; done
    for node in a b; do  # the Asterisk trees `backline up` made for this run's two configs
        tree=$(printf '%s' "$RUN/node-$node.yaml" | sha256sum | cut -c1-10)
        rm -rf "${BACKLINE_ASTERISK_ROOT:-/var/cache/backline/asterisk-root}/srv/backline-up-$tree"
    done
    echo "nodes.sh: stopped; logs kept in $RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Namespaces: a bridge in hub, one veth leg per node.
for ns in "$HUB" "$A" "$B"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" addr add "$HUB_IP/24" dev br0
ip -n "$HUB" link set br0 up
for pair in "$A:$A_IP:va" "$B:$B_IP:vb"; do
    IFS=: read -r ns addr leg <<<"$pair"
    ip -n "$HUB" link add "$leg" type veth peer name eth0 netns "$ns"
    ip -n "$HUB" link set "$leg" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
done

# PostgreSQL in hub: the shared journal and the registrar's location table.
mkdir -p "$RUN/pg/run"
chown -R postgres: "$RUN/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$RUN/pg/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$RUN/pg/initdb.log"
echo "host backline backline $NET.0/24 scram-sha-256" >>"$RUN/pg/data/pg_hba.conf"
setsid ip netns exec "$HUB" runuser -u postgres -- "$PGBIN/postgres" -D "$RUN/pg/data" \
    -c listen_addresses="$HUB_IP" -c port=5432 -c unix_socket_directories="$RUN/pg/run" \
    >"$RUN/pg/postgres.log" 2>&1 &
PIDS+=($!)
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
for _ in $(seq 300); do
    runuser -u postgres -- "$PGBIN/pg_isready" -q -h "$RUN/pg/run" && break; sleep 0.1
done
# The SQL goes on stdin, not -c: a password in argv is visible to every user in ps.
runuser -u postgres -- psql -q -h "$RUN/pg/run" -U postgres -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE backline LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE backline OWNER backline;
SQL
echo "$HUB_IP:5432:*:backline:$PASSWORD" >"$RUN/pgpass"
chmod 600 "$RUN/pgpass"
export PGPASSFILE="$RUN/pgpass"

# One practice, two nodes: the same YAML but for the node's name and SIP address.
export BACKLINE_AMI_SECRET
BACKLINE_AMI_SECRET=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
practice() {  # NODE ADDRESS
    cat <<EOF
practice: {name: Two Nodes Demo, timezone: America/Chicago}
devices: {max_per_login: 2}
users:
  - {id: ana, name: Dr. Ana Lee, email: ana@demo.example, admin: true, extension: "101",
     desk_phones: [ana-desk]}
  - {id: mia, name: Mia Chen, email: mia@demo.example, extension: "121", desk_phones: [mia-desk]}
locations:
  - {id: front, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607", where: Floor 1}
emergency: {callback: "+13125550101", location: front}
teams:
  - {id: nurses, name: Nursing, members: [mia]}
numbers:
  - {number: "+13125550101", carries: [voice], owner: "user:ana", members: ["team:nurses"],
     caller_id_name: Dr Ana Lee}
backup:
  announcement: {text: "Our phone system is experiencing an outage. Please try again later."}
connections:
  pbx:
    kind: asterisk
    node: $1
    registrar: {host: $HUB_IP, port: 5060}
    lan: [$NET.0/24]
    ami: {host: 127.0.0.1, port: 5038, username: backline, secret_env: BACKLINE_AMI_SECRET}
    agi: {host: 127.0.0.1, port: 4573}
    sip: {host: $2, port: 5060}
    # Plain SIP and RTP between this machine's namespaces (check says INSECURE).
    insecure_cleartext: true
    trunk: {host: $HUB_IP, port: 5090, insecure_cleartext: true}
    secrets_file: $RUN/desk-phone-secrets.json
    fax_dir: $RUN/fax-$1
  storage: {url: "postgresql://backline@$HUB_IP:5432/backline"}
EOF
}
practice node-a "$A_IP" >"$RUN/node-a.yaml"
practice node-b "$B_IP" >"$RUN/node-b.yaml"

# Kamailio's files (with the desk phones' HA1s) and the location table.
"$ROOT/.venv/bin/backline" render "$RUN/node-a.yaml" --out "$RUN/render" \
    --kamailio "$HUB_IP:5060" --node "node-a=$A_IP:5060" --node "node-b=$B_IP:5060" \
    --kamailio-dir "$RUN/render/kamailio" >"$RUN/render.log"
ip netns exec "$HUB" psql -q -h "$HUB_IP" -U backline -d backline -v ON_ERROR_STOP=1 \
    -f "$RUN/render/kamailio/location.sql"
mkdir -p "$RUN/kamailio-run"
setsid ip netns exec "$HUB" kamailio -f "$RUN/render/kamailio/kamailio.cfg" -DD -E \
    -Y "$RUN/kamailio-run" -m 64 -M 8 >"$RUN/kamailio.log" 2>&1 &
PIDS+=($!)

# The nodes: `backline up` in each namespace (Asterisk and the controller).
for node in a b; do
    ns=$([[ $node == a ]] && echo "$A" || echo "$B")
    setsid ip netns exec "$ns" "$ROOT/.venv/bin/backline" up "$RUN/node-$node.yaml" \
        >"$RUN/node-$node.log" 2>&1 &
    PIDS+=($!)
done
for node in a b; do
    for _ in $(seq 1200); do grep -q '^ready' "$RUN/node-$node.log" && break; sleep 0.1; done
    grep -q '^ready' "$RUN/node-$node.log" || { echo "node $node did not start:" >&2;
                                               tail -20 "$RUN/node-$node.log" >&2; exit 1; }
done

cat <<EOF
ready: Kamailio (registrar) on $HUB_IP:5060 in namespace $HUB; node-a on $A_IP, node-b on $B_IP
  desk phones register with Kamailio: user ana-desk or mia-desk, AOR (To) ana or mia, realm
  backline, secrets in $RUN/desk-phone-secrets.json; the carrier calls +13125550101 through
  Kamailio from $HUB_IP (e.g. ip netns exec $HUB sipp ...); logs in $RUN
EOF

if [[ $DEMO -eq 1 ]]; then
    cd "$ROOT"
    HUB="$HUB" HUB_IP="$HUB_IP" RUN="$RUN" NODE_A_NS="$A" .venv/bin/python - <<'EOF'
"""Two desk phones registered with Kamailio; every carrier call rings both, whichever node
takes it; then node a dies (everything in its namespace SIGKILLed) and calls still ring."""
import json, os, signal, subprocess
from pathlib import Path
from tests.harness.sipp import DeskPhoneMode, Host, desk_phone, place_calls

hub, run = Host(os.environ["HUB_IP"], os.environ["HUB"]), Path(os.environ["RUN"])
kam = (os.environ["HUB_IP"], 5060)
secrets = json.loads((run / "desk-phone-secrets.json").read_text())
work = run / "demo"
ana = desk_phone(kam, work, "ana-desk", secrets["ana-desk"], DeskPhoneMode.ANSWER_AND_HANG_UP,
                 talk_ms=200, aor="ana", host=hub, pickup_ms=1000)
mia = desk_phone(kam, work, "mia-desk", secrets["mia-desk"], DeskPhoneMode.RING, aor="mia",
                 host=hub)
print("ana-desk and mia-desk registered with Kamailio")


def calls(first: int, last: int) -> None:
    for n in range(first, last + 1):
        result = place_calls(kam, work, "+13125550101", from_user="carrier", host=hub).wait(60)
        rang = [p.wait_for_invites(n, 15)[-1] for p in (ana, mia)]
        node = rang[1].header_values("Via")[1].split()[1].split(";")[0]  # below Kamailio's
        print(f"call {n}: {'answered' if result.ok else 'FAILED'}, taken by the node at "
              f"{node}: ana-desk rang, mia-desk rang")


try:
    calls(1, 6)
    pids = subprocess.run(["ip", "netns", "pids", os.environ["NODE_A_NS"]], check=True,
                          capture_output=True, text=True).stdout.split()
    for pid in pids:  # node a's `backline up`, controller and Asterisk: ours, in our netns
        os.kill(int(pid), signal.SIGKILL)
    print("node a SIGKILLed: the next calls still ring both phones")
    calls(7, 10)
finally:
    ana.kill()
    mia.kill()
EOF
else
    echo "Ctrl-C stops everything"
    while sleep 3600; do :; done
fi
