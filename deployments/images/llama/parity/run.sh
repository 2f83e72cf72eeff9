#!/usr/bin/env bash
# Regenerates testdata/reference.json (make parity-fixture; not in CI):
# transformers' greedy continuations and pooled embeddings on ggufgen's
# TinyLlama(seed), which the llama image test compares with the generation
# runtime's answers (issue 15, Correctness).
#
# transformers, torch and gguf come from Debian sid (no PyPI): a sid root
# made by debootstrap is cached in $PY_ROOT (default
# /var/cache/nlpswarm/py-sid, about 2.3 GB with torch) and reused while it
# holds the pinned versions; apt checks the archive's signature and hashes,
# `dpkg --verify` the installed files. ggufgen writes the model twice and
# the two must be byte-identical (the fixture records its sha256; the image
# test rebuilds it in memory and checks that hash before comparing).
# Needs root (debootstrap, chroot) and Go.
#
#   PARITY_SEED  TinyLlama's seed (default 14); the script prints the
#                smallest top-1 logit margin along every greedy answer
#   PY_ROOT      the cached sid root; FORCE=1 rebuilds it
set -euo pipefail
cd "$(dirname "$0")/../../../.."
SEED=${PARITY_SEED:-14}
PY_ROOT=${PY_ROOT:-/var/cache/nlpswarm/py-sid}
GO=${GO:-go}
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
here=deployments/images/llama/parity
log() { printf '[parity] %s\n' "$*" >&2; }
pins="python3-torch=2.14.1+dfsg-1 python3-transformers=5.12.1-2 python3-accelerate=1.14.0-3 python3-gguf=1:0.7.0+dfsg-2 python3-tokenizers=0.23.1+dfsg-2.1 python3-jinja2=3.1.6-4"

mkdir -p "$(dirname "$PY_ROOT")"
exec 9>"$PY_ROOT.lock"
flock 9
marker="$PY_ROOT/.nlpswarm-parity"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$marker" 2>/dev/null)" != "$pins" ]; then
  if [ ! -x "$PY_ROOT/usr/bin/apt-get" ] || [ "${FORCE:-0}" = 1 ]; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$PY_ROOT"
    log "debootstrap sid into $PY_ROOT (minutes, once)"
    debootstrap --variant=minbase sid "$PY_ROOT" "$MIRROR" >/tmp/nlpswarm-py-debootstrap.log 2>&1 ||
      { log "debootstrap failed, see /tmp/nlpswarm-py-debootstrap.log"; exit 1; }
  fi
  chroot "$PY_ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update
  # shellcheck disable=SC2086 # pins is a list of name=version
  chroot "$PY_ROOT" apt-get install -y -qq --no-install-recommends $pins >/dev/null ||
    { log "apt could not install $pins from sid (a newer version replaced one? update the pins)"; exit 1; }
  chroot "$PY_ROOT" apt-get clean
  printf '%s' "$pins" >"$marker"
fi
# shellcheck disable=SC2046
chroot "$PY_ROOT" dpkg --verify $(for p in $pins; do printf '%s ' "${p%%=*}"; done) ||
  { log "dpkg --verify: installed files differ from the packages"; exit 1; }

work="$PY_ROOT/tmp/nlpswarm-parity"
rm -rf "$work"
mkdir -p "$work"
"$GO" run ./$here/tinygguf -seed "$SEED" -o "$work/model.gguf"
"$GO" run ./$here/tinygguf -seed "$SEED" -o "$work/again.gguf"
cmp "$work/model.gguf" "$work/again.gguf" || { log "ggufgen wrote two different files for seed $SEED"; exit 1; }
log "TinyLlama($SEED): $(stat -c %s "$work/model.gguf") bytes, sha256 $(sha256sum "$work/model.gguf" | cut -c1-16)…, the same twice"
cp "$here/reference.py" "$work/"
chroot "$PY_ROOT" env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HOME=/tmp \
  python3 /tmp/nlpswarm-parity/reference.py /tmp/nlpswarm-parity/model.gguf "$SEED" /tmp/nlpswarm-parity/reference.json
cp "$work/reference.json" "$here/testdata/reference.json"
log "wrote $here/testdata/reference.json"
