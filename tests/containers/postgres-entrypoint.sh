#!/bin/sh
# The official postgres image's entrypoint, reduced to what compose.yaml uses: as root, make
# the data directory the postgres user's and re-run as that user; on an empty data directory
# initdb (superuser password from POSTGRES_PASSWORD_FILE), run the init scripts over the local
# socket, then start the server for real with the command's arguments.
set -eu

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=${POSTGRES_PASSWORD_FILE:-}
  initdb --username=postgres --auth-local=trust --auth-host=scram-sha-256 \
    ${pwfile:+--pwfile="$pwfile"} -D "$PGDATA" >/dev/null
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" \
    -w start >/dev/null
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "postgres-entrypoint: running $f"; PGHOST=/var/run/postgresql sh "$f" ;;
      *.sql) echo "postgres-entrypoint: running $f"; psql -h /var/run/postgresql -U postgres -v ON_ERROR_STOP=1 -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi

if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
