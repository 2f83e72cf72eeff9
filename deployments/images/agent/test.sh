#!/usr/bin/env bash
# Tests the agent image (make test-agent-image, part of make test) on a
# machine without a GPU: builds it (cached: seconds), then runs its agent.
#  1. no driver: zero GPUs and the reason that names the missing library;
#  2. a fake libnvidia-ml.so.1 (fakenvml.c, built here with gcc) bind-mounted
#     where the README's "GPU nodes" puts the driver's: go-nvml dlopens it
#     and the reason is the library's own answer, so the documented mount
#     is found by the image's loader;
#  3. the closure: only glibc, and no NVIDIA library inside the image.
set -euo pipefail
cd "$(dirname "$0")/../../.."
AGENT_IMAGE=${AGENT_IMAGE:-nlpswarm-agent:dev}
log() { printf '[agent-image test] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
AGENT_IMAGE=$AGENT_IMAGE ./deployments/images/agent/build.sh

out=$(docker run --rm --network none "$AGENT_IMAGE" agent --print)
log "no driver: $(tr -d '\n' <<<"$out")"
grep -q '"gpus": \[\]' <<<"$out" || fail "GPUs reported without a driver"
grep -q '"reason": "NVML not available: libnvidia-ml.so.1 not found' <<<"$out" || fail "reason: $out"

tmp=$(mktemp -d) cid=
trap 'rm -rf "$tmp"; [ -z "$cid" ] || docker rm "$cid" >/dev/null' EXIT
gcc -shared -fPIC -O2 -o "$tmp/libnvidia-ml.so.1" deployments/images/agent/fakenvml.c
out=$(docker run --rm --network none \
  --mount "type=bind,source=$tmp/libnvidia-ml.so.1,target=/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1,readonly" \
  "$AGENT_IMAGE" agent --print)
log "fake library bind-mounted: $(tr -d '\n' <<<"$out")"
grep -q '"reason": "NVML not available: Driver Not Loaded (fake libnvidia-ml of test.sh)"' <<<"$out" ||
  fail "the bind-mounted library was not loaded: $out"

cid=$(docker create "$AGENT_IMAGE")
files=$(docker export "$cid" | tar -t)
grep -q 'libc.so.6' <<<"$files" || fail "no glibc in the image"
! grep -qi 'nvidia\|libcuda' <<<"$files" || fail "an NVIDIA library in the image: $(grep -i 'nvidia\|libcuda' <<<"$files")"
! grep -q 'bin/sh$\|bin/bash$' <<<"$files" || fail "a shell in the image"
log "ok: $(grep -c . <<<"$files") entries, $(docker image inspect -f '{{.Size}}' "$AGENT_IMAGE") bytes"
