#!/usr/bin/env bash
# Installs the system packages eddy needs, idempotently, with apt-get.
# Usage: scripts/deps.sh [GROUP...]   groups: fuse nfs ssh containers bench browser s3 all (default: fuse)
set -euo pipefail

declare -A GROUP=(
  [fuse]="fuse3 attr acl e2fsprogs util-linux iproute2 procps rsync sqlite3 git"
  [nfs]="nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils iproute2"
  [ssh]="openssh-server openssh-client sshfs"
  [containers]="containerd runc busybox-static"
  [bench]="fio"
  # Headless Debian chromium for the status page's browser tests (driven with chromedp).
  [browser]="chromium fonts-dejavu-core"
  # The S3 tests' system needs, and the S3 clients `eddy bench` compares eddy with
  # (s3fs-fuse, rclone mount); their server, versitygw, is built by scripts/versitygw.sh.
  [s3]="attr ca-certificates s3fs rclone"
)

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(fuse)
if [[ " ${groups[*]} " == *" all "* ]]; then groups=(fuse nfs ssh containers bench browser s3); fi

want=()
for g in "${groups[@]}"; do
  [ -n "${GROUP[$g]+x}" ] || { echo "deps.sh: unknown group '$g' (fuse nfs ssh containers bench browser s3 all)" >&2; exit 2; }
  for p in ${GROUP[$g]}; do want+=("$p"); done
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: need root to install: ${missing[*]}" >&2; exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Daemons from these packages must not start on install: eddy starts its own,
# with private configs, and stops them by PID.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
