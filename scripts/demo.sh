#!/usr/bin/env bash
# eddy demo: one node over a local origin directory, no configuration.
# Usage: scripts/demo.sh [BASE_DIR]   (default /tmp/eddy-demo; run by `make demo`)
# Creates BASE/{origin,mnt,cache}, seeds the origin, starts `bin/eddy daemon`,
# writes and re-reads a file through the mount, reads a 256 MiB file cold and
# warm, shows the cache stats, and keeps the mount up until Ctrl-C.
set -euo pipefail

BASE=${1:-/tmp/eddy-demo}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EDDY=$ROOT/bin/eddy
ORIGIN=$BASE/origin MNT=$BASE/mnt CACHE=$BASE/cache
SOCK=$BASE/eddy.sock LOG=$BASE/daemon.log PIDFILE=$BASE/daemon.pid

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (FUSE mount with allow_other); try: sudo make demo"
[ -x "$EDDY" ] || die "$EDDY missing; run: make build"
[ -e /dev/fuse ] || die "no /dev/fuse (modprobe fuse)"

# --- clean a previous demo's leftovers (daemon, stale or live mount) --------
if [ -f "$PIDFILE" ]; then
  old=$(cat "$PIDFILE")
  if [ -n "$old" ] && kill -0 "$old" 2>/dev/null && grep -q "eddy" "/proc/$old/cmdline" 2>/dev/null; then
    echo "stopping the previous demo daemon (pid $old)"
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$old" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
fi
if grep -qs " $MNT " /proc/self/mountinfo || ! stat "$MNT" >/dev/null 2>&1; then
  umount -l "$MNT" 2>/dev/null || true
fi
rm -rf "$ORIGIN" "$CACHE" "$SOCK" "$LOG"
mkdir -p "$ORIGIN/datasets" "$MNT" "$CACHE"

# --- seed the origin ----------------------------------------------------------
say "seeding the origin $ORIGIN"
echo "Hello from the origin. Edit me through $MNT." > "$ORIGIN/README.txt"
for i in 1 2 3; do seq 1 20000 | sed "s/^/row $i,/" > "$ORIGIN/datasets/table-$i.csv"; done
head -c $((256 << 20)) /dev/urandom > "$ORIGIN/datasets/big.bin"
ls -lR "$ORIGIN" | sed 's/^/    /'

# --- start the daemon ---------------------------------------------------------
say "starting: eddy daemon --origin $ORIGIN --mount $MNT --cache-dir $CACHE --socket $SOCK"
"$EDDY" daemon --origin "$ORIGIN" --mount "$MNT" --cache-dir "$CACHE" --cache-size 2G \
  --socket "$SOCK" >"$LOG" 2>&1 &
DPID=$!
echo "$DPID" > "$PIDFILE"

stop_daemon() {
  trap - INT TERM EXIT
  if kill -0 "$DPID" 2>/dev/null; then
    echo; echo "stopping the daemon (pid $DPID); it unmounts $MNT"
    kill -TERM "$DPID" 2>/dev/null || true
    for _ in $(seq 75); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$DPID" 2>/dev/null; then kill -KILL "$DPID" 2>/dev/null || true; umount -l "$MNT" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
}
trap stop_daemon INT TERM EXIT

eddy() { "$EDDY" --socket "$SOCK" "$@"; }
for _ in $(seq 150); do
  if grep -qs " $MNT " /proc/self/mountinfo && eddy cache stats >/dev/null 2>&1; then break; fi
  kill -0 "$DPID" 2>/dev/null || { cat "$LOG" >&2; die "the daemon exited"; }
  sleep 0.1
done
grep -qs " $MNT " /proc/self/mountinfo || { cat "$LOG" >&2; die "the mount did not come up"; }
echo "mounted (daemon pid $DPID, log $LOG)"

# --- write through the mount, re-read -----------------------------------------
say "writing a file through the mount and reading it back"
echo "written through eddy at $(date -Is)" > "$MNT/hello.txt"
echo "mount : $(cat "$MNT/hello.txt")"
echo "origin: $(cat "$ORIGIN/hello.txt")   <- write-through: the origin has it already"

# --- cold then warm read of the big file --------------------------------------
mbps() { # bytes nanoseconds
  awk -v b="$1" -v ns="$2" 'BEGIN { if (ns <= 0) ns = 1; printf "%.0f MB/s", b / 1e6 / (ns / 1e9) }'
}
timed_read() {
  local t0 t1
  t0=$(date +%s%N)
  dd if="$1" of=/dev/null bs=1M status=none
  t1=$(date +%s%N)
  mbps $((256 << 20)) $((t1 - t0))
}
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
say "reading datasets/big.bin (256 MiB) through the mount"
echo "cold (fetched from the origin, cached on the way): $(timed_read "$MNT/datasets/big.bin")"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
echo "warm (served from the local cache):               $(timed_read "$MNT/datasets/big.bin")"
if cmp -s "$MNT/datasets/big.bin" "$ORIGIN/datasets/big.bin"; then echo "content identical to the origin"; else die "content differs from the origin"; fi

say "eddy cache stats"
eddy cache stats
say "eddy cache ls"
eddy cache ls

cat <<TRY

The share is mounted at $MNT. Try, in another terminal:
  ls -l $MNT/datasets
  $EDDY --socket $SOCK cache stats --json
  $EDDY --socket $SOCK cache warm $MNT/datasets
  $EDDY --socket $SOCK cache pin $MNT/datasets/big.bin
  $EDDY --socket $SOCK cache evict $MNT/datasets
  echo changed > $ORIGIN/README.txt; cat $MNT/README.txt   # changes on the origin are seen
Daemon log: $LOG

Press Ctrl-C to stop the daemon and unmount.
TRY
wait "$DPID" || true
