#!/bin/bash
# Runs in the bookworm base (the agent Dockerfile's first stage): copies the
# ldd closure of the binary $1 into $2, after checking that the binary runs
# on this glibc, that every library is a file of the pinned libc6
# ($LIBC6_VERSION, an apt version pattern) and that its bytes are the
# package's (dpkg's recorded digests; debootstrap checked the packages
# against the signed archive).
set -euo pipefail
bin=$1 out=$2
fail() { echo "closure: $*" >&2; exit 1; }
have=$(dpkg-query -W -f '${Version}' libc6)
# shellcheck disable=SC2053 # a pattern on purpose
[[ $have == ${LIBC6_VERSION:?} ]] || fail "libc6 $have in the base, pinned $LIBC6_VERSION (rebuild the base: FORCE=1 deployments/images/build.sh, or change the pin)"
# a binary built against a newer glibc fails here, not on a node
"$bin" --version >/dev/null || fail "$bin does not run on libc6 $have"
libs=$(ldd "$bin" | awk '/not found/{print "MISSING " $1; next} /=>/{print $3; next} $1 ~ /^\//{print $1}' | sort -u)
grep -q MISSING <<<"$libs" && fail "unresolved: $libs"
bad=$(dpkg --verify libc6 | grep -v ' /usr/share/' || true)
[ -z "$bad" ] || fail "libc6 files differ from the package: $bad"
# merged /usr: dpkg knows a file by the path its package ships
owner_of() { { dpkg -S "$1" 2>/dev/null || dpkg -S "${1#/usr}" 2>/dev/null || dpkg -S "/usr$1" 2>/dev/null || echo none; } | head -1 | cut -d: -f1; }
for f in $libs; do
  owner=$(owner_of "$f")
  [ "$owner" = libc6 ] || fail "$f belongs to $owner, not libc6: pin it too"
  mkdir -p "$out$(dirname "$f")"
  cp -L "$f" "$out$f"
  echo "closure: $f (libc6 $have)"
done
