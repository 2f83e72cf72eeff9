#!/usr/bin/env bash
# Builds the generation runtime's CPU image (nlpswarm-llama, issue 15): the
# static nlpswarm binary (its `generate` role is the entrypoint: it fetches
# the model and runs llama-server as its child) with Debian sid's llama.cpp
# (llama-server: OpenAI-compatible, continuous batching with --parallel) and
# ggml's CPU backends, with the ldd closure of both, on an empty root (no
# shell, no package manager). Needs bin/nlpswarm (make build).
#
# llama.cpp is in sid only. A sid root made by debootstrap is cached in
# $LLAMA_ROOT (default /var/cache/nlpswarm/llama-sid) and reused while it
# holds the pinned versions, so a warm run only rebuilds the image. The
# packages come from the archive with apt's signature and hash checks;
# `dpkg --verify` then checks every installed file against the packages'
# md5sums. Nothing is pulled from a registry; nothing binary is committed.
# Needs root (debootstrap, chroot) and docker.
#
# CUDA=1 builds the CUDA variant instead (nlpswarm-llama-cuda, `make
# llama-cuda-image`, for GPU nodes): the same, plus ggml's CUDA backend
# (sid contrib's libggml0-backend-cuda, the same version as libggml0) and
# Debian's CUDA 12.4 runtime it links (non-free: libcudart12, libcublas12,
# libcublaslt12), in a root of its own seeded from the CPU one. The driver
# library (libcuda.so.1) is NOT in the image: the NVIDIA container runtime
# mounts the node's own; apt's dependency on it is met by a local empty
# package that says so (nlpswarm-host-libcuda), and the closure refuses
# any driver library and any missing library but libcuda.so.1.
#
#   LLAMA_VERSION  apt version of llama.cpp-tools and libllama0 (1:0.7.0+dfsg-2)
#   GGML_VERSION   apt version of libggml0 (and libggml0-backend-cuda) (0.27.0-1)
#   CUDART_VERSION apt version of libcudart12 (12.4.127~12.4.1-8.2+b1), CUDA=1
#   CUBLAS_VERSION apt version of libcublas12, libcublaslt12 (12.4.5.8~12.4.1-8.2+b1), CUDA=1
#   LLAMA_IMAGE    tag of the image (default nlpswarm-llama:dev, or nlpswarm-llama-cuda:dev)
#   LLAMA_ROOT     the cached sid root (default /var/cache/nlpswarm/llama-sid, or llama-cuda-sid)
#   FORCE=1        rebuilds the root
# `build.sh root` only makes sure the root exists (make test prepares it in
# the background while Go compiles: it is network and disk work).
set -euo pipefail
cd "$(dirname "$0")/../../.."
CUDA=${CUDA:-0}
LLAMA_VERSION=${LLAMA_VERSION:-1:0.7.0+dfsg-2}
GGML_VERSION=${GGML_VERSION:-0.27.0-1}
CUDART_VERSION=${CUDART_VERSION:-12.4.127~12.4.1-8.2+b1}
CUBLAS_VERSION=${CUBLAS_VERSION:-12.4.5.8~12.4.1-8.2+b1}
cpu_root=/var/cache/nlpswarm/llama-sid
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
pins="llama.cpp-tools=$LLAMA_VERSION libllama0=$LLAMA_VERSION libggml0=$GGML_VERSION"
if [ "$CUDA" = 1 ]; then
  LLAMA_IMAGE=${LLAMA_IMAGE:-nlpswarm-llama-cuda:dev}
  LLAMA_ROOT=${LLAMA_ROOT:-/var/cache/nlpswarm/llama-cuda-sid}
  ctx=bin/image-llama-cuda
  pins="$pins libggml0-backend-cuda=$GGML_VERSION libcudart12=$CUDART_VERSION libcublas12=$CUBLAS_VERSION libcublaslt12=$CUBLAS_VERSION"
  log() { printf '[llama-cuda-image] %s\n' "$*" >&2; }
else
  LLAMA_IMAGE=${LLAMA_IMAGE:-nlpswarm-llama:dev}
  LLAMA_ROOT=${LLAMA_ROOT:-$cpu_root}
  ctx=bin/image-llama
  log() { printf '[llama-image] %s\n' "$*" >&2; }
fi
packages=$(for p in $pins; do printf '%s ' "${p%%=*}"; done)

# 1. the sid root with llama.cpp (cached; one builder at a time)
mkdir -p "$(dirname "$LLAMA_ROOT")"
exec 9>"$LLAMA_ROOT.lock"
flock 9
marker="$LLAMA_ROOT/.nlpswarm-llama"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$marker" 2>/dev/null)" != "$pins" ]; then
  ort_root=${ORT_ROOT:-/var/cache/nlpswarm/ort-sid}
  if [ "$CUDA" = 1 ] && [ ! -x "$LLAMA_ROOT/usr/bin/apt-get" ] && [ "${FORCE:-0}" != 1 ] && [ -f "$cpu_root/.nlpswarm-llama" ]; then
    # the CPU image's root holds everything but the CUDA packages
    log "seeding $LLAMA_ROOT from the CPU image's sid root"
    rm -rf "$LLAMA_ROOT"
    (flock 8; cp -a "$cpu_root" "$LLAMA_ROOT") 8>"$cpu_root.lock"
    rm -f "$LLAMA_ROOT/.nlpswarm-llama"
  fi
  if [ ! -x "$LLAMA_ROOT/usr/bin/apt-get" ] && [ "${FORCE:-0}" != 1 ] && [ -f "$ort_root/.nlpswarm-ort" ]; then
    # the ORT image's sid root (make test builds it first) is the same
    # minbase: a copy saves the second debootstrap's minutes
    log "seeding $LLAMA_ROOT from the ORT image's sid root"
    rm -rf "$LLAMA_ROOT"
    (flock 8; cp -a "$ort_root" "$LLAMA_ROOT") 8>"$ort_root.lock"
    rm -f "$LLAMA_ROOT/.nlpswarm-ort"
  fi
  if [ ! -x "$LLAMA_ROOT/usr/bin/apt-get" ] || [ "${FORCE:-0}" = 1 ]; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$LLAMA_ROOT"
    log "debootstrap sid into $LLAMA_ROOT (about 3 minutes, once)"
    debootstrap --variant=minbase sid "$LLAMA_ROOT" "$MIRROR" >/tmp/nlpswarm-llama-debootstrap.log 2>&1 ||
      { log "debootstrap failed, see /tmp/nlpswarm-llama-debootstrap.log"; exit 1; }
  fi
  if [ "$CUDA" = 1 ]; then
    # ggml's CUDA backend is in contrib, the CUDA runtime in non-free
    printf 'deb %s sid main contrib non-free\n' "$MIRROR" >"$LLAMA_ROOT/etc/apt/sources.list"
    # libggml0-backend-cuda depends on libcuda1 | libcuda.so.1, the driver's
    # library, which must come from the node (the NVIDIA container runtime
    # mounts the one matching its kernel module), never from the image: an
    # empty local package provides the name, so apt installs no driver
    stub=$LLAMA_ROOT/tmp/nlpswarm-host-libcuda
    rm -rf "$stub"
    mkdir -p "$stub/DEBIAN"
    cat >"$stub/DEBIAN/control" <<'CONTROL'
Package: nlpswarm-host-libcuda
Version: 1.0
Architecture: all
Maintainer: nlpswarm <nlpswarm@localhost>
Provides: libcuda.so.1 (= 999)
Description: the NVIDIA driver's libcuda.so.1 comes from the node
 The NVIDIA container runtime mounts the node's driver library into GPU
 containers; nlpswarm-llama-cuda ships none (deployments/images/llama/build.sh).
CONTROL
    chroot "$LLAMA_ROOT" dpkg-deb -b /tmp/nlpswarm-host-libcuda /tmp/nlpswarm-host-libcuda.deb >/dev/null
    chroot "$LLAMA_ROOT" dpkg -i /tmp/nlpswarm-host-libcuda.deb >/dev/null
    rm -rf "$stub" "$stub.deb"
  fi
  # sid's Release may read as expired; the archive's signature is still checked
  chroot "$LLAMA_ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update
  # shellcheck disable=SC2086 # pins is a list of name=version
  chroot "$LLAMA_ROOT" apt-get install -y -qq --no-install-recommends $pins >/dev/null ||
    { log "apt could not install $pins from sid (a newer version replaced it? set LLAMA_VERSION/GGML_VERSION)"; exit 1; }
  chroot "$LLAMA_ROOT" apt-get clean
  printf '%s' "$pins" >"$marker"
fi
# shellcheck disable=SC2086 # packages is a list of names
chroot "$LLAMA_ROOT" dpkg --verify $packages ||
  { log "dpkg --verify: installed files differ from the packages"; exit 1; }
# shellcheck disable=SC2086
log "$(chroot "$LLAMA_ROOT" dpkg-query -W -f '${Package} ${Version}  ' $packages)"

[ "${1:-}" = root ] && exit 0

# 2. the closure: llama-server, ggml's backends (CPU ones by CPU feature,
# CUDA's in the CUDA variant; dlopened, so ldd does not list them) and what
# ldd finds for all of them. Only the driver's libcuda.so.1 may be missing
# (the node's, mounted by the NVIDIA container runtime); no driver library
# is copied.
backends=/usr/lib/x86_64-linux-gnu/ggml/backends0
rm -rf "$ctx"
# data/cache: the artifact cache the scheduler mounts a node volume on,
# owned by nobody (the Dockerfile's COPY --chown), which Docker copies into
# the volume when this image's task is the first to create it
mkdir -p "$ctx/rootfs/tmp" "$ctx/rootfs/etc" "$ctx/rootfs$backends" "$ctx/data/cache"
lddout=$(
  chroot "$LLAMA_ROOT" ldd /usr/bin/llama-server
  for so in "$LLAMA_ROOT$backends"/*.so; do chroot "$LLAMA_ROOT" ldd "${so#"$LLAMA_ROOT"}"; echo "${so#"$LLAMA_ROOT"}"; done
  echo /usr/bin/llama-server
)
missing=$(awk '/=> not found/{print $1}' <<<"$lddout" | sort -u | grep -vx 'libcuda.so.1' || true)
[ -z "$missing" ] || { log "the closure misses $missing"; exit 1; }
awk '/=> \//{print $3; next} $1 ~ /^\//{print $1}' <<<"$lddout" | sort -u | grep -Ev '/(libcuda\.so|libnvidia-)[^/]*$' | while read -r f; do
  mkdir -p "$ctx/rootfs$(dirname "$f")"
  cp -L "$LLAMA_ROOT$f" "$ctx/rootfs$f"
done
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
[ -x bin/nlpswarm ] || { log "bin/nlpswarm missing: run make build first"; exit 1; }
cp bin/nlpswarm "$ctx/nlpswarm"
cp deployments/images/llama/Dockerfile "$ctx/Dockerfile"
if [ "$CUDA" = 1 ]; then
  # the NVIDIA container runtime mounts the driver's compute libraries
  # (libcuda.so.1) into containers that ask for them
  printf 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility\nLABEL nlpswarm.engine=llama-cuda\n' >>"$ctx/Dockerfile"
fi
log "closure: $(du -sh "$ctx/rootfs" | cut -f1)"

# 3. the image (docker's cache makes an unchanged context free)
docker build -q -t "$LLAMA_IMAGE" "$ctx" >/dev/null
log "image ready: $LLAMA_IMAGE ($(docker image inspect -f '{{.Id}}' "$LLAMA_IMAGE"))"
