# Shared by single_node.sbatch and multi_node.sbatch (sourced, not run): cluster settings, preemption, requeue.
#
# Settings come from the environment, then from the KEY=VALUE file $AUTOWU_CLUSTER_ENV (default
# scripts/slurm/cluster.env, see cluster.env.example); a variable already set in the environment wins over the file.
#   AUTOWU_GPUS_PER_NODE  processes per node (default: $SLURM_GPUS_ON_NODE, else 1)
#   AUTOWU_DATA_ROOT      passed as --data-dir before the run's own flags (a --data-dir given to the run wins)
#   AUTOWU_SETUP          shell code run first on the batch node (module load ..., source .venv/bin/activate)
#   AUTOWU_PYTHON         interpreter for torchrun (default: python)
#   AUTOWU_MASTER_PORT    c10d rendezvous port on the first node (default: 29500)
#   AUTOWU_CPUS_PER_TASK  CPUs per node the job should have (sbatch -c; the scripts ask for 8 unless told): a
#                         warning when the job got another number
#   AUTOWU_SHUTDOWN_TIMEOUT  seconds torchrun waits for its workers to save after SIGTERM (default: 300)
#
# Preemption and time limit: the scripts ask SLURM for --signal=B:USR1@90 (USR1 to this batch shell 90 s before the
# end) and --requeue. What happens on each signal:
#   USR1 to the batch shell (time limit, `scancel --signal=USR1 --batch`): we send SIGTERM to the training: to
#     torchrun directly (single node), or to every step of the job with `scancel --signal=TERM $SLURM_JOB_ID`
#     (several nodes; srun itself would turn a SIGTERM into a kill of the whole step). torchrun forwards SIGTERM to
#     its workers; train.py saves last.pt within one training step or validation batch and exits 0; we requeue the
#     job, and the requeued job resumes from <output>/last.pt (train.py's --resume auto).
#   USR1 to every process (`scancel --signal=USR1 --full`): torchrun runs with USR1 ignored (it has no handler and
#     would die, leaving its workers behind), the workers save and exit, the batch shell requeues as above.
#   SIGTERM to every process (`scontrol requeue`, `scancel`, preemption with GraceTime): torchrun forwards it, the
#     workers save and exit; SLURM requeues (or ends) the job. The save must finish within the cluster's KillWait.
# torchrun gets TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$AUTOWU_SHUTDOWN_TIMEOUT (a torchrun with --shutdown-timeout reads
# it; older ones kill the workers 30 s after SIGTERM), so a save is not cut short.
set -euo pipefail

AUTOWU_ROOT=${AUTOWU_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$AUTOWU_ROOT"

# autowu_die MESSAGE: a bad setting, before anything starts: one line, exit 2.
autowu_die() { echo "error: [autowu] $*" >&2; exit 2; }

# autowu_check_number NAME VALUE MIN [MAX]: VALUE must be a whole number in [MIN, MAX].
autowu_check_number() {
    local name=$1 value=$2 min=$3 max=${4:-}
    if [[ ! $value =~ ^[0-9]{1,9}$ ]] || (( 10#$value < min )) || { [[ -n $max ]] && (( 10#$value > max )); }; then
        autowu_die "$name=$value: give a whole number >= $min${max:+ and <= $max}"
    fi
}

autowu_load_settings() {
    local file=${AUTOWU_CLUSTER_ENV:-scripts/slurm/cluster.env}
    if [[ -f $file ]]; then
        local syntax
        if ! syntax=$(bash -n "$file" 2>&1); then  # sourcing it would fail half-way with bash's own lines
            autowu_die "${syntax%%$'\n'*}: the cluster file is not bash KEY=VALUE lines; quote values as bash" \
                "would, e.g. KEY=\"a b\""
        fi
        local from_env
        from_env=$(export -p | grep -E '^declare -x AUTOWU_' | sed 's/^declare -x /declare -gx /' || true)
        set -a; source "$file"; set +a
        eval "$from_env"  # the environment wins over the file
    elif [[ -n ${AUTOWU_CLUSTER_ENV:-} ]]; then
        autowu_die "AUTOWU_CLUSTER_ENV=$AUTOWU_CLUSTER_ENV does not exist (or is not a file); point it at your copy" \
            "of scripts/slurm/cluster.env.example or unset it"
    fi
    GPUS_PER_NODE=${AUTOWU_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
    PYTHON=${AUTOWU_PYTHON:-python}
    MASTER_PORT=${AUTOWU_MASTER_PORT:-29500}
    autowu_check_number "${AUTOWU_GPUS_PER_NODE:+AUTOWU_GPUS_PER_NODE}${AUTOWU_GPUS_PER_NODE:-SLURM_GPUS_ON_NODE}" \
        "$GPUS_PER_NODE" 1
    autowu_check_number AUTOWU_MASTER_PORT "$MASTER_PORT" 1 65535
    if [[ -n ${AUTOWU_SHUTDOWN_TIMEOUT:-} ]]; then
        autowu_check_number AUTOWU_SHUTDOWN_TIMEOUT "$AUTOWU_SHUTDOWN_TIMEOUT" 0
    fi
    if [[ -n ${AUTOWU_CPUS_PER_TASK:-} ]]; then autowu_check_number AUTOWU_CPUS_PER_TASK "$AUTOWU_CPUS_PER_TASK" 1; fi
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${AUTOWU_SHUTDOWN_TIMEOUT:-${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}}
    if [[ -n ${AUTOWU_CPUS_PER_TASK:-} && -n ${SLURM_CPUS_PER_TASK:-} &&
          $AUTOWU_CPUS_PER_TASK != "$SLURM_CPUS_PER_TASK" ]]; then
        echo "[autowu] warning: the job has $SLURM_CPUS_PER_TASK CPUs per node, AUTOWU_CPUS_PER_TASK asks for" \
             "$AUTOWU_CPUS_PER_TASK: submit with sbatch -c $AUTOWU_CPUS_PER_TASK" >&2
    fi
    eval "${AUTOWU_SETUP:-}"
}

# autowu_train_args ARGS...: the run's train.py flags, with --data-dir from AUTOWU_DATA_ROOT first (so theirs wins).
autowu_train_args() {
    TRAIN_ARGS=()
    if [[ -n ${AUTOWU_DATA_ROOT:-} ]]; then TRAIN_ARGS+=(--data-dir "$AUTOWU_DATA_ROOT"); fi
    TRAIN_ARGS+=("$@")
    RUN_OUTPUT=""
    local prev=""
    for a in "$@"; do
        if [[ $prev == --output ]]; then RUN_OUTPUT=$a; fi
        prev=$a
    done
    if [[ -z $RUN_OUTPUT ]]; then
        autowu_die "give the run directory: --output DIR (needed to resume after a requeue)"
    fi
}

# Minimum --time: USR1 comes 90 s before the limit, up to ~30 s earlier still (slurmctld checks limits twice a minute),
# and a requeued job starts by loading data and the checkpoint; a shorter job spends most of its time starting and
# stopping, and one of 2 minutes or less is told to stop within 30 s of its start.
AUTOWU_MIN_TIME_MINUTES=10

# autowu_check_time_limit: one warning line when the job's time limit is under AUTOWU_MIN_TIME_MINUTES.
autowu_check_time_limit() {
    local limit minutes
    limit=$(squeue -h -j "${SLURM_JOB_ID:-}" -o %l 2>/dev/null | sed -n 1p) || return 0
    minutes=$(awk -v t="$limit" 'BEGIN {
        if (t !~ /^[0-9:-]+$/) { print -1; exit }
        d = 0; if (index(t, "-")) { split(t, a, "-"); d = a[1]; t = a[2] }
        n = split(t, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]   # [H:]M:SS
        print int((d * 86400 + s) / 60) }')
    if (( minutes >= 0 && minutes < AUTOWU_MIN_TIME_MINUTES )); then
        echo "[autowu] warning: --time $limit is under $AUTOWU_MIN_TIME_MINUTES minutes: USR1 comes up to ~2 minutes" \
             "before the end, so little time is left for training between a start and a save" >&2
    fi
}

# The launcher runs with SIGUSR1 ignored: torchrun has no USR1 handler and would die of it (`scancel --signal=USR1
# --full`), leaving its workers running; the workers install their own handler, so they still get it.
IGNORE_USR1=(bash -c 'trap "" USR1; exec "$@"' ignore-usr1)

# autowu_run_requeueable CMD...: run CMD in the background; on USR1 stop it cleanly and requeue this job.
# AUTOWU_STOP_STEPS=1 (multi_node.sbatch): stop it by sending SIGTERM to the job's steps rather than to CMD (srun).
autowu_run_requeueable() {
    local preempted=0 child="" rc
    trap 'preempted=1; echo "[autowu] $(date +%T) USR1: time limit or preemption; asking training to save and stop"
          autowu_stop "$child"' USR1
    echo "[autowu] $(date +%T) job ${SLURM_JOB_ID:-?} on $(hostname): $*"
    autowu_check_time_limit
    "${IGNORE_USR1[@]}" "$@" &
    child=$!
    if (( preempted )); then autowu_stop "$child"; fi   # USR1 came before $! was known
    while :; do
        rc=0; wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break   # wait returns early when the trap runs; keep waiting for the child
    done
    if (( rc > 128 )); then rc=0; wait "$child" 2>/dev/null || rc=$?; fi   # the exit status, if the trap raced it
    trap - USR1
    if (( preempted )); then
        if [[ -f $RUN_OUTPUT/results.json ]]; then
            echo "[autowu] run finished before the stop; not requeueing"
            return 0
        fi
        echo "[autowu] $(date +%T) training exited with $rc; requeueing job ${SLURM_JOB_ID}"
        local try
        for try in 1 2 3; do  # a busy slurmctld may time out an RPC
            if scontrol requeue "$SLURM_JOB_ID"; then return 0; fi
            echo "[autowu] $(date +%T) scontrol requeue $SLURM_JOB_ID failed (try $try of 3)" >&2
            sleep 5
        done
        return 1
    fi
    echo "[autowu] $(date +%T) training exited with $rc"
    return "$rc"
}

# autowu_stop PID: ask the training to save and stop (SIGTERM; see the top of this file).
autowu_stop() {
    if [[ ${AUTOWU_STOP_STEPS:-0} == 1 ]]; then
        scancel --signal=TERM "$SLURM_JOB_ID" || true   # every step of the job, not this batch shell
    elif [[ -n $1 ]]; then
        kill -TERM "$1" 2>/dev/null || true
    fi
}
