#!/usr/bin/env bash
# Builds the node agent's image (nlpswarm-agent): the cgo build of nlpswarm
# (go-nvml dlopens libnvidia-ml.so.1 at run time; net and os/user stay pure
# Go, so glibc is the whole closure) on glibc from the Debian bookworm base
# that deployments/images/build.sh makes (debootstrap, cached as the image
# nlpswarm-deps-base:bookworm; `build.sh base` makes only it). Nothing is
# pulled from a registry; nothing binary is committed; the image holds no
# NVIDIA library: the node gives it.
#
#   AGENT_IMAGE    tag of the image (default nlpswarm-agent:dev)
#   LIBC6_VERSION  apt version pattern of the base's libc6 (default 2.36-9+deb12u*,
#                  bookworm's; the build fails on another)
set -euo pipefail
cd "$(dirname "$0")/../../.."
AGENT_IMAGE=${AGENT_IMAGE:-nlpswarm-agent:dev}
LIBC6_VERSION=${LIBC6_VERSION:-2.36-9+deb12u*}
BASE=nlpswarm-deps-base:bookworm
GO=${GO:-go}
ctx=bin/image-agent
log() { printf '[agent-image] %s\n' "$*" >&2; }

# one build at a time in this checkout (make test's agent step and a stack
# test's make up may both ask for it): they share the context folder
mkdir -p bin
exec 8>bin/.image-agent.lock
flock 8

# 1. the bookworm base (cached after the first debootstrap)
./deployments/images/build.sh base

# 2. the cgo build (make agent: bin/nlpswarm-agent); the base's glibc is
# bookworm's, so build on bookworm or older (closure.sh fails on a newer one)
make -s agent GO="$GO"

# 3. the context: the binary, the closure script, a root with /tmp, CA
# certificates and nobody (as deployments/image/stage.sh), and an empty
# /usr/lib/x86_64-linux-gnu: Debian's library folder, which its loader
# searches, where the NVIDIA runtime (or the README's bind mount) puts
# the driver's libnvidia-ml.so.1
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/rootfs/usr/lib/x86_64-linux-gnu"
cp bin/nlpswarm-agent "$ctx/nlpswarm"
cp deployments/images/agent/Dockerfile deployments/images/agent/closure.sh "$ctx/"
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then cp "$ca" "$ctx/rootfs/etc/ssl/certs/"; else : >"$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"; fi
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"

# 4. the image: the closure is resolved and checked inside the base
# (closure.sh); docker's cache makes an unchanged context free
docker build -q --build-arg BASE="$BASE" --build-arg LIBC6_VERSION="$LIBC6_VERSION" -t "$AGENT_IMAGE" "$ctx" >/dev/null
log "image ready: $AGENT_IMAGE ($(docker image inspect -f '{{.Id}} {{.Size}}' "$AGENT_IMAGE") bytes)"
