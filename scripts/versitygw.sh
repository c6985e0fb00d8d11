#!/usr/bin/env bash
# Builds versitygw (an S3 gateway over a POSIX directory), the S3 server the
# s3:// origin's integration tests run, into the git-ignored tools directory,
# idempotently. It is not a dependency of eddy's module: `go install` with a
# version builds it in module mode outside go.mod.
# Usage: scripts/versitygw.sh [TOOLS_DIR]   (default: .tools/versitygw under the repo)
set -euo pipefail

VERSION="${VERSITYGW_VERSION:-v1.8.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.tools/versitygw}"
bin="$dir/bin/versitygw"
stamp="$dir/bin/.version"

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "versitygw.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$dir/bin"
echo "versitygw.sh: building versitygw $VERSION into $dir/bin" >&2
# GOFLAGS from the caller (-mod=...) would apply to eddy's module, not this one.
GOFLAGS= GOBIN="$dir/bin" go install "github.com/versity/versitygw/cmd/versitygw@$VERSION"
echo "$VERSION" > "$stamp"
