#!/usr/bin/env bash
# Builds a containerd 2.x daemon, its runc shim and its CLI (containerd, containerd-shim-runc-v2,
# ctr) from the containerd module, at the version of the client in go.mod, into DEST/bin, so
# that the container tests run against it as well as against the distribution's daemon.
# Usage: scripts/containerd2.sh [DEST]     (default: .tools/containerd-2 in the repo, git-ignored)
# Idempotent: does nothing when DEST/bin holds the three binaries of that version. Needs Go and the
# module proxy (go install); runc comes from the system (scripts/deps.sh containers).
# Prints the bin directory on success.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$repo/.tools/containerd-2}
bin=$DEST/bin
mod=github.com/containerd/containerd/v2

version=$(cd "$repo" && go list -m -f '{{.Version}}' "$mod")
[ -n "$version" ] || { echo "containerd2: $mod is not in go.mod" >&2; exit 1; }
stamp=$bin/.version

if [ -x "$bin/containerd" ] && [ -x "$bin/containerd-shim-runc-v2" ] && [ -x "$bin/ctr" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  echo "$bin"; exit 0
fi

mkdir -p "$bin"
log=$DEST/build.log
echo "containerd2: building containerd $version into $bin (log $log)" >&2
# Outside the repository, so that the daemon's dependencies are its own go.mod's, not ours.
if ! (cd / && GOBIN=$bin GOFLAGS=-buildvcs=false go install "$mod/cmd/containerd@$version" \
  "$mod/cmd/containerd-shim-runc-v2@$version" "$mod/cmd/ctr@$version") >"$log" 2>&1; then
  echo "containerd2: build failed (log $log):" >&2
  tail -30 "$log" >&2
  exit 1
fi
"$bin/containerd" --version >>"$log"
echo "$version" >"$stamp"
echo "$bin"
