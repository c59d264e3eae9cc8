#!/usr/bin/env bash
# apt-get ARGS... that waits for another apt-get or dpkg (an unattended upgrade at boot, a second set-up)
# instead of failing at once (issue 26), at most 600 s in all, saying so; used by install_system_deps.sh
# and slurm_single_node.sh, run as root (through sudo where needed), non-interactive.
#   - the dpkg locks that `install` takes: apt's own wait, DPkg::Lock::Timeout (apt >= 1.9; an older
#     apt ignores the option);
#   - the package lists' lock that `update` takes, which apt 2.6 does not wait for (measured: it fails
#     at once with "Could not get lock /var/lib/apt/lists/lock"): retried here every 2 s.
# Exit status: apt-get's.
set -uo pipefail

WAIT_S=600
log=$(mktemp "${TMPDIR:-/tmp}/apt-get.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT
echo "apt-get $*: waits up to ${WAIT_S} s for another apt-get or dpkg to release its lock" >&2
start=$SECONDS
while :; do
    left=$((WAIT_S - (SECONDS - start)))
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$((left > 0 ? left : 0))" "$@" 2>&1 |
        tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ] || ! grep -q "Could not get lock" "$log" || [ $((SECONDS - start)) -ge "$WAIT_S" ]; then
        exit "$rc"
    fi
    echo "apt-get $*: another apt-get holds its lock; trying again in 2 s (until ${WAIT_S} s have passed)" >&2
    sleep 2
done
