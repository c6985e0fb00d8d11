#!/usr/bin/env bash
# Runs every go test -fuzz target in the module, each for a while.
# Usage: scripts/fuzz.sh [DURATION]   (default 30s per target; Go duration syntax)
# A crasher is written under the package's testdata/fuzz/FuzzX/ by go test:
# commit it, it then runs as a regression case in every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-30s}"
status=0
while IFS= read -r file; do
  dir="./$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    echo "== $dir $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir"; then
      echo "!! $dir $target found a failure (see $dir/testdata/fuzz/$target)" >&2
      status=1
    fi
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
exit $status
