#!/bin/sh
# Run `backline "$@"`, first turning the journal's password secret (a file, e.g. a Docker
# secret, named by JOURNAL_PASSWORD_FILE) into a libpq password file readable by this user
# alone.  The password never goes into the URL, the config, the environment or the image.
set -eu

if [ -n "${JOURNAL_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$JOURNAL_PASSWORD_FILE" ]; then
    echo "backline-entrypoint: cannot read JOURNAL_PASSWORD_FILE ($JOURNAL_PASSWORD_FILE)" >&2
    exit 2
  fi
  umask 077
  dir=$(mktemp -d)
  # One line, with libpq's escapes for '\' and ':' (the other fields match any server).
  password=$(head -n 1 "$JOURNAL_PASSWORD_FILE" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')
  printf '*:*:*:*:%s\n' "$password" > "$dir/pgpass"
  PGPASSFILE="$dir/pgpass"
  export PGPASSFILE
  unset PGPASSWORD
fi

exec backline "$@"
