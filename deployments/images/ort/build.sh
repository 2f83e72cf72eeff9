#!/usr/bin/env bash
# Builds the ONNX Runtime runtime image (nlpswarm-ort): the cgo build of
# nlpswarm with tag ORT plus the ldd closure of it and Debian's
# libonnxruntime, on an empty root (no shell, no package manager).
#
# Debian sid's libonnxruntime1.23 (ORT 1.23, C API 23, what hugot v0.6.1's
# onnxruntime_go v1.25.0 asks for; trixie's 1.21 refuses it): a sid root made
# by debootstrap, cached in $ORT_ROOT (default /var/cache/nlpswarm/ort-sid)
# and reused while it holds $ORT_VERSION, so a warm run only rebuilds the
# binary and the image. Nothing is pulled from a registry; nothing binary is
# committed. Needs root (debootstrap, chroot), gcc and docker.
#
#   ORT_VERSION  apt version pattern of libonnxruntime1.23 (default 1.23.2+dfsg-*)
#   ORT_IMAGE    tag of the image (default nlpswarm-ort:dev)
#   ORT_ROOT     the cached sid root
#   FORCE=1      rebuilds the root
# `build.sh root` only makes sure the root exists (make test prepares it in
# the background while Go compiles: it is network and disk work).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ORT_VERSION=${ORT_VERSION:-1.23.2+dfsg-*}
ORT_IMAGE=${ORT_IMAGE:-nlpswarm-ort:dev}
ORT_ROOT=${ORT_ROOT:-/var/cache/nlpswarm/ort-sid}
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
GO=${GO:-go}
ctx=bin/image-ort
log() { printf '[ort-image] %s\n' "$*" >&2; }

# 1. the sid root with libonnxruntime (cached; one builder at a time)
mkdir -p "$(dirname "$ORT_ROOT")"
exec 9>"$ORT_ROOT.lock"
flock 9
marker="$ORT_ROOT/.nlpswarm-ort"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$marker" 2>/dev/null)" != "$ORT_VERSION" ]; then
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
  rm -rf "$ORT_ROOT"
  log "debootstrap sid into $ORT_ROOT (about 3 minutes, once)"
  debootstrap --variant=minbase sid "$ORT_ROOT" "$MIRROR" >/tmp/nlpswarm-ort-debootstrap.log 2>&1 ||
    { log "debootstrap failed, see /tmp/nlpswarm-ort-debootstrap.log"; exit 1; }
  # sid's Release may read as expired; the archive's signature is still checked
  chroot "$ORT_ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update
  chroot "$ORT_ROOT" apt-get install -y -qq --no-install-recommends "libonnxruntime1.23=$ORT_VERSION" >/dev/null
  chroot "$ORT_ROOT" apt-get clean
  printf '%s' "$ORT_VERSION" >"$marker"
fi
[ "${1:-}" = root ] && exit 0
lib=/usr/lib/x86_64-linux-gnu/libonnxruntime.so.1.23
log "libonnxruntime1.23 $(chroot "$ORT_ROOT" dpkg-query -W -f '${Version}' libonnxruntime1.23)"

# 2. the cgo build (onnxruntime_go dlopens the library; cgo is for its header)
CGO_ENABLED=1 $GO build -trimpath -tags ORT -ldflags "-s -w -X main.version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}" \
  -o bin/nlpswarm-ort ./cmd/nlpswarm

# 3. the closure: the binary, libonnxruntime and what ldd finds for both,
# resolved inside the sid root (the binary needs sid's glibc beside ORT's)
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/rootfs/usr/lib" "$ctx/data/store" "$ctx/data/cache"
cp bin/nlpswarm-ort "$ctx/nlpswarm"
cp bin/nlpswarm-ort "$ORT_ROOT/tmp/nlpswarm-ort"
{ chroot "$ORT_ROOT" ldd /tmp/nlpswarm-ort; chroot "$ORT_ROOT" ldd "$lib"; echo "$lib"; } |
  awk '/=>/{print $3; next} $1 ~ /^\//{print $1}' | sort -u | while read -r f; do
    mkdir -p "$ctx/rootfs$(dirname "$f")"
    cp -L "$ORT_ROOT$f" "$ctx/rootfs$f"
  done
rm -f "$ORT_ROOT/tmp/nlpswarm-ort"
# hugot loads libonnxruntime.so from a folder (models.ORTLibraryDir)
ln -s x86_64-linux-gnu/libonnxruntime.so.1.23 "$ctx/rootfs/usr/lib/libonnxruntime.so"
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then cp "$ca" "$ctx/rootfs/etc/ssl/certs/"; else : >"$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"; fi
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
cp deployments/images/ort/Dockerfile "$ctx/Dockerfile"
log "closure: $(du -sh "$ctx/rootfs" | cut -f1) of libraries and files, binary $(du -h "$ctx/nlpswarm" | cut -f1)"

# 4. the image (docker's cache makes an unchanged context free)
docker build -q -t "$ORT_IMAGE" "$ctx" >/dev/null
log "image ready: $ORT_IMAGE ($(docker image inspect -f '{{.Id}}' "$ORT_IMAGE"))"
