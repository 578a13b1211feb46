#!/usr/bin/env bash
# A two-node SLURM cluster on this host, for trying the sbatch scripts (and for tests/test_slurm_cluster.py):
# slurmctld plus two slurmd daemons (nodes n1 and n2, each on its own port, NodeAddr=127.0.0.1) and a private munged.
#
#   sudo bash scripts/slurm/local_cluster.sh up       # install if missing, configure, start, wait until both idle
#   eval "$(bash scripts/slurm/local_cluster.sh env)" # SLURM_CONF for sbatch/squeue/scontrol in this shell
#   sudo bash scripts/slurm/local_cluster.sh status
#   sudo bash scripts/slurm/local_cluster.sh down     # stop, delete the state directory, purge what `up` installed
#   sudo bash scripts/slurm/local_cluster.sh down --keep-packages   # ... but leave the packages installed
#
# Needs root (the daemons run as root) and, when slurm-wlm/munge are missing, Debian/Ubuntu's apt (Debian 12 ships
# Slurm 22.05). Every file lives in $AUTOWU_SLURM_DIR (default /tmp/autowu-slurm): slurm.conf, its own munge key and
# socket, spool and state directories, logs. Nothing is written to /etc/slurm or /etc/munge and no system service is
# started: the packages' postinst scripts are kept from starting daemons (a temporary /usr/sbin/policy-rc.d, only when
# none exists). `up` records the packages and system users it added; `down` purges and deletes exactly those.
# `up` and `down` are idempotent.
#
# Settings (environment): AUTOWU_SLURM_DIR, AUTOWU_SLURM_PORT (slurmctld port; the nodes use the next two;
# default 16817), AUTOWU_SLURM_CPUS (CPUs each node offers, default 8, what the sbatch scripts ask for; more than the
# host has is allowed).
set -euo pipefail

DIR=${AUTOWU_SLURM_DIR:-/tmp/autowu-slurm}
PORT=${AUTOWU_SLURM_PORT:-16817}
CPUS=${AUTOWU_SLURM_CPUS:-8}
NODES=(n1 n2)
CONF=$DIR/slurm.conf
PACKAGES=(slurm-wlm munge)
NEEDED=(slurmctld slurmd sbatch scontrol sinfo munged)

die() { echo "error: local_cluster.sh: $*" >&2; exit 2; }
log() { echo "[local_cluster] $*"; }

usage() { die "unknown command '${*}': use up, down [--keep-packages], status or env (see the top of this script)"; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "needs root (the SLURM daemons run as root, packages may be installed): run with sudo"
}

missing_commands() {
    local c out=()
    for c in "${NEEDED[@]}"; do
        command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || out+=("$c")
    done
    echo "${out[*]}"
}

installed_packages() { dpkg-query -W -f '${Package} ${db:Status-Status}\n' | awk '$2 == "installed" {print $1}' | sort; }

apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; }

install_packages() {
    local missing
    missing=$(missing_commands)
    [[ -z $missing ]] && return 0
    command -v apt-get >/dev/null || die "missing $missing and no apt-get to install ${PACKAGES[*]}; install them"
    log "installing ${PACKAGES[*]} (missing: $missing)"
    mkdir -p "$DIR"
    installed_packages > "$DIR/packages.before"
    cut -d: -f1 /etc/passwd | sort > "$DIR/users.before"
    cut -d: -f1 /etc/group | sort > "$DIR/groups.before"
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then  # keep postinst scripts from starting munge/slurm system services
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
    fi
    local rc=0
    {
        apt_install >"$DIR/apt.log" 2>&1 || { apt-get update -q >>"$DIR/apt.log" 2>&1 && apt_install >>"$DIR/apt.log" 2>&1; }
    } || rc=$?
    (( own_policy )) && rm -f "$policy"
    installed_packages | comm -13 "$DIR/packages.before" - > "$DIR/packages.added"
    cut -d: -f1 /etc/passwd | sort | comm -13 "$DIR/users.before" - > "$DIR/users.added"
    cut -d: -f1 /etc/group | sort | comm -13 "$DIR/groups.before" - > "$DIR/groups.added"
    rm -f "$DIR/packages.before" "$DIR/users.before" "$DIR/groups.before"
    (( rc == 0 )) || { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install ${PACKAGES[*]} failed (log: $DIR/apt.log)"; }
    log "installed $(wc -l < "$DIR/packages.added") package(s)"
    missing=$(missing_commands)
    [[ -z $missing ]] || die "still missing after the install: $missing"
}

write_config() {
    mkdir -p "$DIR"/{munge,log,state,run} "$DIR"/spool/{n1,n2}
    chmod 700 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    local host
    host=$(hostname -s)
    cat > "$CONF" <<EOF
# Written by scripts/slurm/local_cluster.sh: two nodes on one host ($host).
ClusterName=autowu-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=300
SchedulerParameters=sched_interval=2
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 1)) CPUs=$CPUS RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=$CPUS RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

sbin() { if command -v "$1" >/dev/null 2>&1; then command -v "$1"; else echo "/usr/sbin/$1"; fi; }

start_daemons() {
    export SLURM_CONF=$CONF
    if ! pid_alive "$DIR/run/munged.pid"; then
        "$(sbin munged)" --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    fi
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        "$(sbin slurmctld)" -f "$CONF"
    fi
    local n
    for n in "${NODES[@]}"; do
        if ! pid_alive "$DIR/run/slurmd-$n.pid"; then
            "$(sbin slurmd)" -f "$CONF" -N "$n"
        fi
    done
}

# node_states: "n1=idle n2=idle" (empty while slurmctld does not answer)
node_states() { SLURM_CONF=$CONF sinfo -h -N -o '%N=%t' 2>/dev/null | sort -u | tr '\n' ' ' || true; }

wait_idle() {
    local t0=$SECONDS states=""
    while (( SECONDS - t0 < 90 )); do
        states=$(node_states)
        if [[ $states == *"n1=idle"* && $states == *"n2=idle"* ]]; then
            log "up: $states(SLURM_CONF=$CONF)"
            return 0
        fi
        if [[ $states == *down* || $states == *drain* ]]; then  # e.g. left down by an earlier run
            SLURM_CONF=$CONF scontrol update nodename=n1,n2 state=resume 2>/dev/null || true
        fi
        sleep 1
    done
    tail -n 5 "$DIR"/log/*.log >&2 || true
    die "nodes not idle after 90 s (states: ${states:-no answer from slurmctld}); logs in $DIR/log"
}

stop_daemons() {
    local f pid t
    for f in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for t in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    done
}

cmd_up() {
    need_root
    install_packages
    write_config
    start_daemons
    wait_idle
}

cmd_down() {
    need_root
    local keep=0
    case ${1:-} in
        --keep-packages) keep=1 ;;
        "") ;;
        *) die "down: unknown option '$1' (the one option is --keep-packages)" ;;
    esac
    [[ -d $DIR ]] || { log "down: nothing to do ($DIR does not exist)"; return 0; }
    # jobs still running: end their processes first (slurmd's step daemons and the job's own processes)
    if pid_alive "$DIR/run/slurmctld.pid"; then
        SLURM_CONF=$CONF scancel --full --signal=KILL --user=root 2>/dev/null || true
        SLURM_CONF=$CONF scancel --user=root 2>/dev/null || true
        local t
        for t in $(seq 60); do  # until slurmd has cleaned up their steps
            [[ -z $(SLURM_CONF=$CONF squeue -h 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop_daemons
    local pkgs users groups
    pkgs=$(cat "$DIR/packages.added" 2>/dev/null || true)
    users=$(cat "$DIR/users.added" 2>/dev/null || true)
    groups=$(cat "$DIR/groups.added" 2>/dev/null || true)
    if [[ -n $pkgs ]] && (( ! keep )); then
        log "down: purging the $(echo "$pkgs" | wc -w) package(s) that up installed"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $pkgs >/dev/null 2>&1 ||
            log "down: apt-get purge failed; packages left: $pkgs"
        local u g
        for u in $users; do id "$u" >/dev/null 2>&1 && userdel "$u" 2>/dev/null || true; done
        for g in $groups; do getent group "$g" >/dev/null && groupdel "$g" 2>/dev/null || true; done
    elif [[ -n $pkgs ]]; then
        log "down: keeping the packages (--keep-packages): $(echo $pkgs)"
    fi
    rm -rf "$DIR"
    log "down: stopped and removed $DIR"
}

cmd_status() {
    [[ -f $CONF ]] || { echo "down ($CONF does not exist)"; return 3; }
    local d ok=0
    for d in munged slurmctld slurmd-n1 slurmd-n2; do
        if pid_alive "$DIR/run/$d.pid"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"
        else echo "$d: not running"; ok=3; fi
    done
    echo "nodes: $(node_states)"
    echo "export SLURM_CONF=$CONF"
    return $ok
}

case ${1:-} in
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) usage "$@" ;;
esac
