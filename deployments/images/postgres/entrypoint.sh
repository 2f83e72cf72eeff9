#!/bin/sh
# Initialise the cluster on first start (password from POSTGRES_PASSWORD_FILE),
# then exec postgres in the foreground as the postgres user (PID 1, so that
# Swarm's SIGTERM reaches it directly).
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  tmp=$(mktemp)
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then cat "$POSTGRES_PASSWORD_FILE" >"$tmp"
  elif [ -n "${POSTGRES_PASSWORD:-}" ]; then printf '%s' "$POSTGRES_PASSWORD" >"$tmp"
  else echo "entrypoint: set POSTGRES_PASSWORD_FILE" >&2; exit 1; fi
  chown postgres "$tmp"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$tmp" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
  rm -f "$tmp"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
    as_pg createdb -h /run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' -k /run/postgresql
