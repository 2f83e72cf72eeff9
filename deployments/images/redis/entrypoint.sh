#!/bin/sh
# Redis with a password and a memory cap (issue 17 finding 4). Writes a
# config that only redis can read and execs redis-server on it (PID 1).
#   REDIS_PASSWORD_FILE      the default user's password (required: no
#                            password, no start)
#   /run/secrets/redis_password_<user>  an ACL user per role, for clients
#                            that send a user name (--redis.username)
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_POLICY  the cap and what goes first
# Every user is denied the @dangerous commands (CONFIG, FLUSHALL, DEBUG,
# MODULE, KEYS, ...): a client that leaks its password cannot rewrite the
# server's files or wipe it.
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
printf 'user default on >%s ~* &* +@all -@dangerous\n' "$(pw "$REDIS_PASSWORD_FILE")" >"$acl"
for f in /run/secrets/redis_password_*; do
  [ -e "$f" ] || continue
  u=${f##*/redis_password_}
  case $u in *[!a-z]*|"") echo "entrypoint: skipping $f (user names are a-z)" >&2; continue;; esac
  printf 'user %s on >%s ~* &* +@all -@dangerous\n' "$u" "$(pw "$f")" >>"$acl"
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
