#!/bin/sh
# Redis with a password and a memory cap (issue 17 finding 4). Writes a
# config that only redis can read and execs redis-server on it (PID 1).
#   REDIS_PASSWORD_FILE      the ops user's password (required: no password,
#                            no start); the default user is off
#   /run/secrets/redis_password_<role>  the ACL user of each role (gateway,
#                            scheduler), with only the commands and keys of
#                            its line in /etc/redis/roles.acl
#   REDIS_KEY_PREFIX         the roles' key prefix (nlpswarm:)
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_POLICY  the cap and what goes first
# The ops user (operators, checks) is denied the @dangerous commands
# (CONFIG, FLUSHALL, DEBUG, MODULE, KEYS, ...): a leaked password cannot
# rewrite the server's files or wipe it.
set -eu
: "${REDIS_PASSWORD_FILE:?set REDIS_PASSWORD_FILE (a Docker secret)}"
: "${REDIS_MAXMEMORY:=192mb}" "${REDIS_MAXMEMORY_POLICY:=volatile-lru}"
umask 077
dir=$(mktemp -d /tmp/redis.XXXXXX)
conf=$dir/redis.conf
acl=$dir/users.acl
pw() {
  v=$(cat "$1")
  case $v in *[!A-Za-z0-9_.+/=-]*|"") echo "entrypoint: $1 is empty or has characters other than [A-Za-z0-9_.+/=-]" >&2; exit 1;; esac
  printf '%s' "$v"
}
: "${REDIS_KEY_PREFIX:=nlpswarm:}"
case $REDIS_KEY_PREFIX in *[!a-z0-9:_-]*|"") echo "entrypoint: REDIS_KEY_PREFIX has characters other than [a-z0-9:_-]" >&2; exit 1;; esac
roles=/etc/redis/roles.acl
{
  echo 'user default off'
  printf 'user ops on >%s ~* &* +@all -@dangerous\n' "$(pw "$REDIS_PASSWORD_FILE")"
} >"$acl"
for f in /run/secrets/redis_password_*; do
  [ -e "$f" ] || continue
  u=${f##*/redis_password_}
  rules=$(awk -v u="$u" '$1 == u { $1 = ""; print; exit }' "$roles")
  if [ -z "$rules" ]; then echo "entrypoint: no rules for user $u in $roles" >&2; exit 1; fi
  printf 'user %s on >%s resetchannels %s\n' "$u" "$(pw "$f")" "$(printf '%s' "$rules" | sed "s/{prefix}/$REDIS_KEY_PREFIX/g")" >>"$acl"
done
cat >"$conf" <<CONF
bind 0.0.0.0
protected-mode yes
port 6379
save ""
appendonly no
aclfile $acl
maxmemory $REDIS_MAXMEMORY
maxmemory-policy $REDIS_MAXMEMORY_POLICY
CONF
exec redis-server "$conf"
