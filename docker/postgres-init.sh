#!/bin/sh
# PostgreSQL's first start (the image runs /docker-entrypoint-initdb.d/* once, on an empty data
# directory): the journal role `backline` is an ordinary role owning its database, not the
# superuser, and the superuser gets no password, so it can log in only on the container's own
# unix socket, never over the network.  The journal password comes from the secret file.
set -eu

secret=${JOURNAL_PASSWORD_FILE:-/run/secrets/journal_password}
if [ ! -r "$secret" ]; then
  echo "postgres-init: cannot read the journal password ($secret)" >&2
  exit 2
fi
# psql reads the password from the file itself (a backquoted command) and quotes it as an SQL
# literal (:'password'): it is never on a command line or in the environment.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
  --dbname postgres --set=secret="$secret" <<'SQL'
\set password `head -n 1 :'secret'`
CREATE ROLE backline LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  PASSWORD :'password';
CREATE DATABASE backline OWNER backline TEMPLATE template0 ENCODING 'UTF8';
ALTER ROLE CURRENT_USER PASSWORD NULL;
SQL
