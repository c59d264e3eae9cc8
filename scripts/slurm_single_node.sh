#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with accounting, for testing profiles/slurm
# (tests/test_slurm.py): Debian's munge, slurmctld, slurmd, slurmdbd and a private MariaDB server.
#
# Usage: scripts/slurm_single_node.sh install|start|stop|status|env
#   install  apt-get the Debian packages that are missing (root or passwordless sudo)
#   start    install, write /etc/slurm/{slurm,slurmdbd,cgroup}.conf for this host (CPUs and memory
#            from `slurmd -C`; never over files this script did not write), start munged (unless one
#            already answers), mariadbd, slurmdbd, slurmctld and slurmd, register the cluster and an
#            account with sacctmgr, and wait until `sinfo` shows the node idle. sbatch, sacct, sinfo
#            and snakemake's SLURM executor then find the cluster by themselves (the last line
#            printed, `export SLURM_CONF=/etc/slurm/slurm.conf`, says where it is).
#   stop     stop what start started (munged only if start started it) and remove those three files;
#            the state folder (database, logs) stays, and the next start reuses the database
#   status   exit 0 when every daemon is up, 1 otherwise
#   env      print the export line
# Exit status: 0 done; 77 this machine cannot run the cluster (not root, no apt-get or packages, a
# daemon that does not come up), with the reason on stderr in a line starting with "SKIP:"; 1 error.
#
# Environment: BENCH_SLURM_DIR (state, database, logs; default /tmp/bench-slurm),
# BENCH_SLURM_PORT (slurmctld port; slurmd and slurmdbd use the next two; default 16817, away from
# the defaults of a real cluster's daemons), BENCH_SLURM_DB_PORT (MariaDB on 127.0.0.1; default 13306).
# Process tracking is proctrack/linuxproc and task/none (no cgroups: containers rarely delegate
# them), everything runs as root, and every port is on 127.0.0.1.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH_SLURM_DIR="${BENCH_SLURM_DIR:-/tmp/bench-slurm}"
BENCH_SLURM_PORT="${BENCH_SLURM_PORT:-16817}"
BENCH_SLURM_DB_PORT="${BENCH_SLURM_DB_PORT:-13306}"
# The environment is checked before anything runs (one line naming the value, exit 2): the ports as
# numbers before any arithmetic, the state folder as an absolute path of plain characters, as it is
# written into slurm.conf and slurmdbd.conf (a space or a newline would change their meaning there).
# shellcheck source=scripts/env_values.sh
source "$HERE/env_values.sh"
whole BENCH_SLURM_PORT 1024 65533  # slurmd and slurmdbd listen on the next two
whole BENCH_SLURM_DB_PORT 1024 65535
if ! [[ $BENCH_SLURM_DIR =~ ^(/[A-Za-z0-9_.+][A-Za-z0-9_.+-]*)+/?$ ]]; then
    refuse BENCH_SLURM_DIR "an absolute path below / of letters, digits and _.+- (no part starting with '-')"
fi
DIR="$BENCH_SLURM_DIR"
CLUSTER=bench
ACCOUNT=bench
CTLD_PORT="$BENCH_SLURM_PORT"
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT="$BENCH_SLURM_DB_PORT"
DB_PASS=bench-slurm-local
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server mariadb-client)
# The plugin's job step drops SLURM_CONF before its inner srun, so the configuration must be where the
# binaries look by default. Files there that this script did not write are left alone (start skips).
ETC=/etc/slurm
MARK="# Written by scripts/slurm_single_node.sh"
CONF="$ETC/slurm.conf"
RUN="$DIR/run"
LOG="$DIR/log"
SOCKET="$RUN/mysqld.sock"

say() { echo "slurm_single_node: $*" >&2; }
STARTING=0
skip() {  # the reason, then exit 77; a start that fails half way stops what it started
    echo "SKIP: $*" >&2
    if [ "$STARTING" -eq 1 ]; then STARTING=0; do_stop >/dev/null 2>&1 || true; fi
    exit 77
}

# The last lines of a log file, indented, for a message.
tail_of() { [ -f "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/    /' || echo "    ($1 does not exist)"; }

missing_packages() {
    local package
    for package in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            echo "$package"
        fi
    done
}

do_install() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        for tool in munged slurmctld slurmd slurmdbd sacctmgr mariadbd; do
            command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 \
                || skip "not a Debian system and $tool is not installed"
        done
        return 0
    fi
    local missing
    missing=$(missing_packages | tr '\n' ' ')
    if [ -z "${missing// /}" ]; then
        say "packages installed: ${PACKAGES[*]}"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || skip "apt-get not found; install $missing by hand"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            skip "not root and no passwordless sudo to install $missing"
        fi
    fi
    say "installing $missing(apt-get; a few minutes, and up to 10 more while another apt-get holds the lock)"
    # apt_get.sh: apt-get that waits while another apt-get or dpkg holds the lock. $missing: package names.
    # shellcheck disable=SC2086
    if ! { $sudo bash "$HERE/apt_get.sh" update -q && $sudo bash "$HERE/apt_get.sh" install -y -q \
            --no-install-recommends $missing; } >"${TMPDIR:-/tmp}/bench-slurm-apt.log" 2>&1; then
        skip "apt-get could not install $missing: $(tail -n 3 "${TMPDIR:-/tmp}/bench-slurm-apt.log" | tr '\n' ' ')"
    fi
}

# pid of a daemon from its pid file when that process is alive, else nothing
alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every second
    local seconds=$1 what=$2
    shift 2
    local i
    for ((i = 0; i < seconds; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    say "$what: not ready after ${seconds}s"
    return 1
}

write_config() {
    local host node
    host=$(hostname -s)
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node=$(slurmd -C | head -n 1)
    case "$node" in NodeName=*) ;; *) skip "slurmd -C printed no node line: $node" ;; esac
    local file
    for file in slurm.conf slurmdbd.conf cgroup.conf; do
        if [ -e "$ETC/$file" ] && ! head -n 1 "$ETC/$file" | grep -qF "$MARK"; then
            skip "$ETC/$file exists and belongs to another SLURM set-up; this script leaves it alone"
        fi
    done
    mkdir -p "$DIR/state" "$DIR/spool" "$RUN" "$LOG" "$ETC"
    cat >"$CONF" <<EOF
$MARK for host $host: a one-node test cluster, all on 127.0.0.1, state in $DIR.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: processes are tracked through /proc, and tasks are not bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd reads slurmdbd.conf beside slurm.conf; it must be private to SlurmUser.
    cat >"$ETC/slurmdbd.conf" <<EOF
$MARK: accounting in the private MariaDB server on 127.0.0.1:$DB_PORT.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    # Read by cgroup plugins only; none is configured (proctrack/linuxproc, task/none).
    cat >"$ETC/cgroup.conf" <<EOF
$MARK: unused, the cluster tracks processes without cgroups.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged: already running, used as it is"
        return 0
    fi
    [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create >/dev/null 2>&1 \
        || skip "no /etc/munge/munge.key and mungekey could not create one"
    install -d -o munge -g munge -m 0755 /run/munge
    if ! runuser -u munge -- /usr/sbin/munged >"$LOG/munged.out" 2>&1; then
        skip "munged did not start: $(tr '\n' ' ' <"$LOG/munged.out")"
    fi
    wait_for 20 munged sh -c 'munge -n | unmunge' || skip "munged does not answer"
    cp /run/munge/munged.pid "$RUN/munged.pid"  # ours: stop ends it
}

start_mariadb() {
    if [ -n "$(alive "$RUN/mysqld.pid")" ]; then return 0; fi
    if [ ! -d "$DIR/mysql/mysql" ]; then
        rm -rf "$DIR/mysql"
        if ! mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --skip-test-db \
                --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1; then
            skip "mariadb-install-db failed:
$(tail_of "$LOG/mariadb-install.log")"
        fi
    fi
    # slurmdbd's recommended InnoDB settings; networking on 127.0.0.1 only.
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$SOCKET" \
        --pid-file="$RUN/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
        --log-error="$LOG/mariadb.log" </dev/null >/dev/null 2>&1 &
    local pid=$! i
    for ((i = 0; ; i++)); do
        if mariadb-admin --no-defaults --socket="$SOCKET" -u root ping >/dev/null 2>&1; then break; fi
        if [ "$i" -ge 60 ] || ! kill -0 "$pid" 2>/dev/null; then
            skip "mariadbd did not start:
$(tail_of "$LOG/mariadb.log")"
        fi
        sleep 1
    done
    mariadb --no-defaults --socket="$SOCKET" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

# cluster|account|user of every association, e.g. "bench|root|", "bench|bench|", "bench|bench|root"
assoc() { timeout 30 sacctmgr -n -P show assoc format=cluster,account,user </dev/null | head -n 1000; }

node_idle() {
    local state
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1)
    [ "$state" = idle ]
}

do_start() {
    [ "$(id -u)" -eq 0 ] || skip "the daemons start as root here (run as root; uid is $(id -u))"
    do_install
    export PATH="$PATH:/usr/sbin:/sbin"
    export SLURM_CONF="$CONF"
    if do_status >/dev/null 2>&1; then
        say "already running"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    do_stop >/dev/null 2>&1 || true  # whatever half of a previous start is left
    STARTING=1
    write_config
    start_munge
    start_mariadb
    rm -f "$RUN/slurmdbd.pid" "$RUN/slurmctld.pid" "$RUN/slurmd.pid"
    slurmdbd >"$LOG/slurmdbd.out" 2>&1 || skip "slurmdbd did not start:
$(tail_of "$LOG/slurmdbd.log")"
    wait_for 60 slurmdbd timeout 10 sacctmgr -n list cluster || skip "slurmdbd does not answer:
$(tail_of "$LOG/slurmdbd.log")"
    # The cluster, an account and root's association with it (what `sacct` and the plugin look up).
    # (`sacctmgr list user NAME account=X` loops forever in 22.05: associations are queried instead.)
    if ! assoc | grep -q "^$CLUSTER|"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! assoc | grep -qx "$CLUSTER|$ACCOUNT|"; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="bench test jobs" \
            Organization=bench >/dev/null
    fi
    if ! assoc | grep -qx "$CLUSTER|$ACCOUNT|root"; then
        sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    fi
    # -c: a clean queue, no jobs left from an earlier start.
    slurmctld -c >"$LOG/slurmctld.out" 2>&1 || skip "slurmctld did not start:
$(tail_of "$LOG/slurmctld.log")"
    wait_for 60 slurmctld timeout 10 scontrol ping || skip "slurmctld does not answer:
$(tail_of "$LOG/slurmctld.log")"
    slurmd >"$LOG/slurmd.out" 2>&1 || skip "slurmd did not start:
$(tail_of "$LOG/slurmd.log")"
    if ! wait_for 60 "node $(hostname -s) idle" node_idle; then
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        wait_for 20 "node $(hostname -s) idle" node_idle || skip "the node did not become idle:
$(sinfo -N -l 2>&1 | sed 's/^/    /')
$(tail_of "$LOG/slurmd.log")"
    fi
    STARTING=0
    say "cluster $CLUSTER up: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -n 1), accounting in slurmdbd"
    echo "export SLURM_CONF=$CONF"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, up to 30 s, then KILL
    local pid i
    pid=$(alive "$2") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$2"; say "$1 stopped"; return 0; }
        sleep 1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$2"
    say "$1 killed"
}

do_stop() {
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadbd "$RUN/mysqld.pid"
    stop_pidfile munged "$RUN/munged.pid"  # only when start started it
    local file
    for file in slurm.conf slurmdbd.conf cgroup.conf; do
        if [ -f "$ETC/$file" ] && head -n 1 "$ETC/$file" | grep -qF "$MARK"; then rm -f "$ETC/$file"; fi
    done
}

do_status() {
    local name ok=0
    for name in slurmd slurmctld slurmdbd mysqld; do
        if [ -n "$(alive "$RUN/$name.pid")" ]; then echo "$name: running"; else echo "$name: stopped"; ok=1; fi
    done
    if [ "$ok" -eq 0 ]; then
        SLURM_CONF="$CONF" sinfo -N -o '%N %T %c %m' 2>/dev/null || ok=1
    fi
    return "$ok"
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
