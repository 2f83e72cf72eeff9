#!/usr/bin/env bash
# Builds the stack's third-party images locally from Debian's packages, for
# clusters with no registry (this project's machines): a Debian bookworm base
# made by debootstrap with postgresql-15, redis-server and prometheus, then
# three small images on it. On a cluster with a registry, skip this and set
# POSTGRES_IMAGE / REDIS_IMAGE / PROMETHEUS_IMAGE to the official images.
# Idempotent: the debootstrap base is kept (FORCE=1 rebuilds it).
# `build.sh base` only makes sure the base exists: the agent image
# (deployments/images/agent) takes its glibc from it.
set -euo pipefail
cd "$(dirname "$0")"
BASE=nlpswarm-deps-base:bookworm
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
log() { printf '[images] %s\n' "$*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# one builder at a time (make test builds the base in the background while
# a stack test's make up may ask for it): the second waits, then finds it
mkdir -p /tmp/nlpswarm-images
exec 9>/tmp/nlpswarm-images/deps-base.lock
flock 9
if [ "${FORCE:-0}" = 1 ] || ! have "$BASE"; then
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
  root=$(mktemp -d /tmp/nlpswarm-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap bookworm with postgresql-15, redis-server, prometheus (about 2 minutes)"
  debootstrap --variant=minbase --include=postgresql-15,redis-server,prometheus,ca-certificates \
    bookworm "$root" "$MIRROR" >/tmp/nlpswarm-debootstrap.log 2>&1 ||
    { log "debootstrap failed, see /tmp/nlpswarm-debootstrap.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  # the packages' own clusters and configs are not used: entrypoints make their own
  rm -rf "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main
  log "importing $BASE"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' - "$BASE" >/dev/null
fi

[ "${1:-}" = base ] && exit 0
flock -u 9

# always built: Docker's cache makes it a second when nothing changed, and
# an image kept from an older checkout would run an older entrypoint
for img in postgres redis prometheus; do
  tag="nlpswarm-$img:local"
  docker build -q -t "$tag" "$img" >/dev/null
done
log "images ready: nlpswarm-postgres:local nlpswarm-redis:local nlpswarm-prometheus:local"
