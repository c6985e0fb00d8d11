#!/usr/bin/env bash
# eddy demo: one node over a local origin directory, no configuration.
# Usage: scripts/demo.sh [BASE_DIR]   (default /tmp/eddy-demo; run by `make demo`)
# Creates BASE/{origin,mnt,cache}, seeds the origin, starts `bin/eddy daemon` as a
# one-node cluster (its own scheduler), writes and re-reads a file through the
# mount, reads a 256 MiB file cold and warm, submits a task with an input on the
# share and shows its placement, its log and its directories, shows the cache
# stats and what `eddy gc` would remove, and keeps the mount up until Ctrl-C.
# EDDY_DEMO_LISTEN sets the cluster API's address (default 127.0.0.1:7979).
set -euo pipefail

BASE=${1:-/tmp/eddy-demo}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EDDY=$ROOT/bin/eddy
ORIGIN=$BASE/origin MNT=$BASE/mnt CACHE=$BASE/cache
SOCK=$BASE/eddy.sock LOG=$BASE/daemon.log PIDFILE=$BASE/daemon.pid
TOKEN=$BASE/token LISTEN=${EDDY_DEMO_LISTEN:-127.0.0.1:7979}
# The demo's task runs as nobody: the cluster refuses root's tasks.
TASK_UID=65534 TASK_GID=65534

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
rm -rf "$ORIGIN" "$CACHE" "$CACHE"-* "$SOCK" "$LOG" "$TOKEN"
mkdir -p "$ORIGIN/datasets" "$MNT" "$CACHE"
chmod 755 "$BASE" # tasks run as nobody: they reach the mount through it
( umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN" )

# --- seed the origin ----------------------------------------------------------
say "seeding the origin $ORIGIN"
echo "Hello from the origin. Edit me through $MNT." > "$ORIGIN/README.txt"
for i in 1 2 3; do seq 1 20000 | sed "s/^/row $i,/" > "$ORIGIN/datasets/table-$i.csv"; done
head -c $((256 << 20)) /dev/urandom > "$ORIGIN/datasets/big.bin"
ls -lR "$ORIGIN" | sed 's/^/    /'

# --- start the daemon ---------------------------------------------------------
say "starting: eddy daemon --origin $ORIGIN --mount $MNT --cache-dir $CACHE --socket $SOCK --scheduler --listen $LISTEN"
echo "(--scheduler: this node holds the task queue and joins itself: a one-node cluster)"
"$EDDY" daemon --origin "$ORIGIN" --mount "$MNT" --cache-dir "$CACHE" --cache-size 2G \
  --socket "$SOCK" --scheduler --listen "$LISTEN" --token-file "$TOKEN" --node-name demo >"$LOG" 2>&1 &
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

# --- a task on the one-node cluster --------------------------------------------
for _ in $(seq 150); do
  eddy nodes --json 2>/dev/null | grep -q '"up": true' && break
  kill -0 "$DPID" 2>/dev/null || { cat "$LOG" >&2; die "the daemon exited"; }
  sleep 0.2
done
say "eddy nodes"
eddy nodes

say "a task as root is refused at submit"
echo "\$ eddy submit -- id"
eddy submit -- id || true

say "submitting a task with an input on the share (as uid $TASK_UID)"
SCRIPT='echo "task $EDDY_TASK_ID as $(id -un 2>/dev/null || id -u) on $(hostname)"
echo "rows in the input: $(wc -l < "$EDDY_SHARED_DIR/datasets/table-1.csv")"
echo "shared data dir: $EDDY_SHARED_DIR/shared_data"
echo "user dir:        $EDDY_USER_DIR"
echo "job dir:         $EDDY_JOB_DIR"
echo "node scratch:    $EDDY_SCRATCH"
sort -t, -k2 -n -r "$EDDY_SHARED_DIR/datasets/table-1.csv" | head -n 3 > "$EDDY_SCRATCH/top.csv"
cp "$EDDY_SCRATCH/top.csv" "$EDDY_JOB_DIR/top.csv"
date -Is >> "$EDDY_USER_DIR/runs.log"'
echo "\$ eddy submit --uid $TASK_UID --gid $TASK_GID --input $MNT/datasets/table-1.csv -- sh -c '...'"
TASK=$(eddy submit --uid "$TASK_UID" --gid "$TASK_GID" --mem 256M --input "$MNT/datasets/table-1.csv" -- sh -c "$SCRIPT")
echo "task id: $TASK"
state=
for _ in $(seq 300); do
  state=$(eddy tasks show --json "$TASK" | sed -n 's/^  "state": "\(.*\)",$/\1/p')
  case "$state" in completed|failed|killed|lost) break ;; esac
  sleep 0.2
done
say "eddy tasks show $TASK   (where it ran, and why)"
eddy tasks show "$TASK"
say "eddy tasks logs $TASK"
eddy tasks logs "$TASK"
if [ "$state" != completed ]; then
  echo "--- stderr ---"; eddy tasks logs --stderr "$TASK"
  die "the task ended $state (daemon log: $LOG)"
fi
say "the task's directories on the share"
ls -ld "$MNT/logs/$TASK" "$MNT/users/"* "$MNT/jobs/$TASK" | sed 's/^/    /'
echo "jobs/$TASK/top.csv (kept after the task; eddy gc removes it after 7 days):"
sed 's/^/    /' "$MNT/jobs/$TASK/top.csv"
echo "its node-local scratch dir is gone with it: $(ls "$CACHE-scratch" 2>/dev/null | wc -l) scratch dirs left"

say "eddy cache stats"
eddy cache stats
say "eddy cache ls"
eddy cache ls
say "eddy gc --share $MNT   (a dry run: what it would remove)"
eddy gc --share "$MNT"

cat <<TRY

The share is mounted at $MNT. Try, in another terminal:
  ls -l $MNT/datasets
  $EDDY --socket $SOCK cache stats --json
  $EDDY --socket $SOCK cache warm $MNT/datasets
  $EDDY --socket $SOCK cache pin $MNT/datasets/big.bin
  $EDDY --socket $SOCK cache evict $MNT/datasets
  $EDDY --socket $SOCK submit --uid $TASK_UID --gid $TASK_GID --wait -- sh -c 'ls \$EDDY_SHARED_DIR'
  $EDDY --socket $SOCK tasks ls
  echo changed > $ORIGIN/README.txt; cat $MNT/README.txt   # changes on the origin are seen
Daemon log: $LOG

Press Ctrl-C to stop the daemon and unmount.
TRY
wait "$DPID" || true
