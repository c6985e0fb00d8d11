#!/usr/bin/env bash
# Builds pjdfstest, the POSIX file system conformance suite vendored in
# third_party/pjdfstest (BSD licence, upstream commit in UPSTREAM-COMMIT), into DEST.
# Usage: scripts/pjdfstest-build.sh [DEST]     (default: .tools/pjdfstest in the repo, git-ignored)
# Then: cd INTO-THE-FILE-SYSTEM && prove -r DEST/tests. DEST/pjdfstest is the binary the tests call.
# Idempotent: installs autoconf, automake, gcc, make, perl, openssl and libssl-dev with apt-get
# only when missing (root), and rebuilds only when DEST/pjdfstest is missing or older than
# the vendored source. The source tree is never written to: the build happens in DEST.
# Prints the path of the binary on success.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/third_party/pjdfstest
DEST=${1:-$repo/.tools/pjdfstest}
[ -f "$src/pjdfstest.c" ] || { echo "pjdfstest-build: no source in $src" >&2; exit 1; }

# Tools the build and the suite need, and the packages that provide them.
declare -A PKG=([autoreconf]=autoconf [automake]=automake [gcc]=gcc [make]=make [prove]=perl [openssl]=openssl)
missing=()
for t in "${!PKG[@]}"; do command -v "$t" >/dev/null || missing+=("${PKG[$t]}"); done
dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q "install ok installed" || missing+=(libssl-dev)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "pjdfstest-build: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "pjdfstest-build: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bin=$DEST/pjdfstest
if [ -x "$bin" ] && [ -d "$DEST/tests" ] && [ -z "$(find "$src" -newer "$bin" -print -quit)" ]; then
  echo "$bin"; exit 0
fi

mkdir -p "$DEST"
rm -rf "$DEST/tests"
cp -r "$src/." "$DEST/"
chmod -R u+w "$DEST"
log=$DEST/build.log
if ! (cd "$DEST" && autoreconf -ifs && ./configure -q && make -s pjdfstest) >"$log" 2>&1; then
  echo "pjdfstest-build: build failed (log $log):" >&2
  tail -30 "$log" >&2
  exit 1
fi
touch "$bin"
echo "$bin"
