# Shared by single_node.sbatch and multi_node.sbatch (sourced, not run): cluster settings, preemption, requeue.
#
# Settings come from the environment, then from the KEY=VALUE file $AUTOWU_CLUSTER_ENV (default
# scripts/slurm/cluster.env, see cluster.env.example); a variable already set in the environment wins over the file.
#   AUTOWU_GPUS_PER_NODE  processes per node (default: $SLURM_GPUS_ON_NODE, else 1)
#   AUTOWU_DATA_ROOT      passed as --data-dir before the run's own flags (a --data-dir given to the run wins)
#   AUTOWU_SETUP          shell code run first on the batch node (module load ..., source .venv/bin/activate)
#   AUTOWU_PYTHON         interpreter for torchrun (default: python)
#   AUTOWU_MASTER_PORT    c10d rendezvous port on the first node (default: 29500)
#
# Preemption and time limit: the scripts ask SLURM for --signal=B:USR1@90 (USR1 to this batch shell 90 s before the
# end) and --requeue. On USR1 we send SIGTERM to the launcher (srun forwards it to torchrun on every node; torchrun
# forwards SIGTERM to its workers; SIGUSR1 it would not forward). train.py then saves last.pt and exits 0; we requeue
# the job, and the requeued job resumes from <output>/last.pt (train.py's --resume auto).
set -euo pipefail

AUTOWU_ROOT=${AUTOWU_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$AUTOWU_ROOT"

autowu_load_settings() {
    local file=${AUTOWU_CLUSTER_ENV:-scripts/slurm/cluster.env}
    if [[ -f $file ]]; then
        local from_env
        from_env=$(export -p | grep -E '^declare -x AUTOWU_' | sed 's/^declare -x /declare -gx /' || true)
        set -a; source "$file"; set +a
        eval "$from_env"  # the environment wins over the file
    elif [[ -n ${AUTOWU_CLUSTER_ENV:-} ]]; then
        echo "[autowu] AUTOWU_CLUSTER_ENV=$AUTOWU_CLUSTER_ENV does not exist" >&2
        exit 2
    fi
    GPUS_PER_NODE=${AUTOWU_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
    PYTHON=${AUTOWU_PYTHON:-python}
    MASTER_PORT=${AUTOWU_MASTER_PORT:-29500}
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
        echo "[autowu] give the run directory: --output DIR (needed to resume after a requeue)" >&2
        exit 2
    fi
}

# autowu_run_requeueable CMD...: run CMD in the background; on USR1 stop it cleanly and requeue this job.
autowu_run_requeueable() {
    local preempted=0 child="" rc
    trap 'preempted=1; echo "[autowu] $(date +%T) USR1: time limit or preemption; asking training to save and stop"; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null || true' USR1
    echo "[autowu] $(date +%T) job ${SLURM_JOB_ID:-?} on $(hostname): $*"
    "$@" &
    child=$!
    if (( preempted )); then kill -TERM "$child" 2>/dev/null || true; fi   # USR1 came before $! was known
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
        scontrol requeue "$SLURM_JOB_ID"
        return 0
    fi
    echo "[autowu] $(date +%T) training exited with $rc"
    return "$rc"
}
