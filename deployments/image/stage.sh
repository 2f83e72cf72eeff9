#!/usr/bin/env bash
# Stages the build context of the scratch image in $1 (default bin/image):
# the static binary, CA certificates, /etc/passwd with nobody, /tmp (1777)
# and the data folder owned by nobody. Needs bin/nlpswarm built.
set -euo pipefail
cd "$(dirname "$0")/../.."
ctx=${1:-bin/image}
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/data/store" "$ctx/data/cache"
cp bin/nlpswarm "$ctx/nlpswarm"
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then cp "$ca" "$ctx/rootfs/etc/ssl/certs/"; else : >"$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"; fi
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
cp deployments/image/Dockerfile "$ctx/Dockerfile"
