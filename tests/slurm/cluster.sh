#!/usr/bin/env bash
# A real single-node Slurm cluster (munged, slurmctld, slurmd) for the `slurm` tests and CI.
#
#   tests/slurm/cluster.sh up      install (root, when missing), configure, start, wait idle
#   tests/slurm/cluster.sh down    stop slurmd, slurmctld, munged by the pids in their files
#   tests/slurm/cluster.sh status  exit 0 when the node answers in sinfo
#
# Everything lives under $SKYDECK_SLURM_DIR (default /tmp/skydeck-slurm): the configuration
# (given with SLURM_CONF and -f, /etc/slurm is never touched), state, spool, logs, pid files
# and `env`, which tests source (SLURM_CONF=...). `up` is idempotent: a running cluster is
# left as it is. Facts behind the configuration: docs/pipeline.md (Slurm launcher).
set -euo pipefail

DIR="${SKYDECK_SLURM_DIR:-/tmp/skydeck-slurm}"
CONF="$DIR/slurm.conf"
WAIT_S="${SKYDECK_SLURM_WAIT_S:-30}"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "cluster.sh: $*" >&2; exit 1; }

have_all() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null
}

install_packages() {
    have_all && return 0
    [ "$(id -u)" -eq 0 ] || die "Slurm/munge missing and not root: install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "Slurm/munge missing and no apt-get: install ${PACKAGES[*]}"
    echo "cluster.sh: installing ${PACKAGES[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >&2
    have_all || die "installed ${PACKAGES[*]} but a daemon is still missing"
}

alive() {  # alive PIDFILE: the pid in the file is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
    local host cpus
    host="$(hostname -s)"
    cpus="$(nproc)"
    mkdir -p "$DIR/state" "$DIR/spool"
    cat > "$CONF.tmp" <<CONF
ClusterName=skydeck-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${SKYDECK_SLURMCTLD_PORT:-6817}
SlurmdPort=${SKYDECK_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.tmp" "$CONF"
    printf 'SLURM_CONF=%s\n' "$CONF" > "$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
}

node_idle() {
    SLURM_CONF="$CONF" sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

up() {
    install_packages
    [ "$(id -u)" -eq 0 ] || die "starting the daemons needs root"
    mkdir -p "$DIR"
    if alive "$DIR/munged.pid" && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" \
            && node_idle; then
        echo "cluster.sh: already up ($CONF)" >&2
        return 0
    fi
    write_config
    if ! alive "$DIR/munged.pid"; then
        [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (munge's postinst makes it)"
        install -d -o munge -g munge -m 0755 /run/munge
        # munged runs as munge and writes its pid file itself: a folder it owns
        install -d -o munge -g munge -m 0755 "$DIR/munge"
        runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid" \
            || die "munged did not start"
        ln -sf munge/munged.pid "$DIR/munged.pid"
    fi
    munge -n | unmunge >/dev/null || die "munge does not answer (see /var/log/munge)"
    if ! alive "$DIR/slurmctld.pid"; then
        SLURM_CONF="$CONF" slurmctld -f "$CONF" || die "slurmctld did not start: $DIR/slurmctld.log"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        SLURM_CONF="$CONF" slurmd -f "$CONF" || die "slurmd did not start: $DIR/slurmd.log"
    fi
    local t=0
    until node_idle; do
        t=$((t + 1))
        [ "$t" -le $((WAIT_S * 5)) ] || die "node not idle after ${WAIT_S} s: $(SLURM_CONF="$CONF" sinfo -h -N 2>&1 | head -1); logs in $DIR"
        sleep 0.2
    done
    echo "cluster.sh: up; source $DIR/env (SLURM_CONF=$CONF)" >&2
}

stop_pid() {  # stop_pid NAME PIDFILE
    local pid
    if alive "$2"; then
        pid="$(cat "$2")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: $1 ($pid) ignored SIGTERM for 10 s; SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$2"
}

down() {
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    stop_pid munged "$DIR/munged.pid"
    rm -f "$DIR/env"
}

status() {
    [ -f "$CONF" ] || { echo "cluster.sh: not configured ($CONF missing)" >&2; return 1; }
    for d in munged slurmctld slurmd; do
        if alive "$DIR/$d.pid"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"
        else echo "$d: not running"; fi
    done
    SLURM_CONF="$CONF" sinfo -N 2>&1 || true
    node_idle
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status   (scratch dir: \$SKYDECK_SLURM_DIR, default /tmp/skydeck-slurm)" >&2
       exit 2 ;;
esac
