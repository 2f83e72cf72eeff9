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
# One login role per service (issue 17 finding 7): nlpswarm_<role> for every
# secret /run/secrets/db_password_<role>, its password set at every start
# (a rotated secret takes effect on the next start); the grants come with
# the schema (migrations/00018_service_roles.sql). No superuser, no DDL.
roles=
for f in /run/secrets/db_password_*; do
  [ -e "$f" ] || continue
  r=${f##*/db_password_}
  case $r in *[!a-z]*|"") echo "entrypoint: skipping $f (role names are a-z)" >&2; continue;; esac
  roles="$roles $r"
done
if [ -n "$roles" ]; then
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  for r in $roles; do
    # the password travels in the environment of psql (\getenv), never in
    # its command line
    NLPSWARM_ROLE_PASSWORD=$(cat "/run/secrets/db_password_$r")
    export NLPSWARM_ROLE_PASSWORD
    as_pg psql -X -q -v ON_ERROR_STOP=1 \
      -h /run/postgresql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -v role="nlpswarm_$r" <<'SQL' >/dev/null
\getenv pw NLPSWARM_ROLE_PASSWORD
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'pw';
SQL
  done
  unset NLPSWARM_ROLE_PASSWORD
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: login roles set:$roles" >&2
fi
# Probe idle client connections: a client whose node lost power sends no
# FIN, and without probes its session (and any lock it holds) would live the
# two hours of the kernel's default; these end it about 30 s after the last
# packet (issue 18, migrations/00041_dead_session_timeouts.sql).
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' -k /run/postgresql \
  -c tcp_keepalives_idle=15 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3
