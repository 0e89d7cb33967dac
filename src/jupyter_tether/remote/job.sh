#!/bin/bash
# jupyter-tether: JupyterLab as a batch job on a compute node.
#
# `tether up` submits this file with `sbatch --parsable` (the job's options on sbatch's
# command line) and TETHER_SESSION in the environment: the 0700 session directory on the
# shared home (remote/core.py, JobPaths). job.env there holds the settings and Jupyter's
# argv, no secrets; the token is in a 0600 Jupyter config file that argv only names.
#
# Jupyter listens on a Unix socket in a private directory on the node's local disk, so
# no TCP port is open to other users of the node. When it answers, this script writes
# ready.json (job id, node, socket, pid) into the session directory, atomically, for the
# workstation to read. SIGTERM (scancel, the time limit, preemption) becomes a clean
# Jupyter shutdown; SIGUSR1, which sbatch --signal sends before the time limit, leaves
# the time in "warned". Jupyter runs in the background because bash runs a trap only
# once its foreground child has exited.
set -u
umask 077
session=${TETHER_SESSION:?TETHER_SESSION names the session directory}
. "$session/job.env"
node=${SLURMD_NODENAME:-$(hostname)}
job=${SLURM_JOB_ID:-0}
log() { printf 'jupyter-tether: %s\n' "$*" >&2; }

put() { # put FILE TEXT: write atomically
    printf '%s\n' "$2" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

rundir=$(mktemp -d "${TETHER_NODE_TMP:-/tmp}/jupyter-tether-job.XXXXXX") || {
    log "cannot make a private directory in ${TETHER_NODE_TMP:-/tmp} on $node"
    exit 3
}
cleanup() { rm -rf "$rundir"; }
trap cleanup EXIT
mkdir -m 700 "$rundir/runtime"
export JUPYTER_RUNTIME_DIR="$rundir/runtime"
unset JUPYTER_PORT JUPYTER_TOKEN JUPYTER_TOKEN_FILE
cd "$HOME" || exit 3

if [ -n "$TETHER_MODULES" ]; then
    if ! command -v module >/dev/null 2>&1 && [ -n "$TETHER_MODULE_INIT" ]; then
        . "$TETHER_MODULE_INIT"
    fi
    for m in $TETHER_MODULES; do
        module load "$m" || {
            log "\`module load $m\` failed on $node"
            put "$session/ended.json" "{\"job\": \"$job\", \"how\": \"module load $m failed\", \"at\": $(date +%s)}"
            exit 3
        }
    done
fi

sshd=$(command -v sshd 2>/dev/null)
for candidate in /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd; do
    [ -n "$sshd" ] && break
    [ -x "$candidate" ] && sshd=$candidate
done

sock="$rundir/jupyter.sock"
address=""
if [ "${TETHER_TRANSPORT:-socket}" = tcp ]; then
    # Only where the workstation can reach the node no other way (README: Clusters):
    # TCP on the node's cluster address, a port the OS picks, protected by the token.
    address=$(hostname -I 2>/dev/null | awk '{print $1}')
    [ -n "$address" ] || address=$(hostname -i 2>/dev/null | awk '{print $1}')
    "$@" "--ip=$address" --port=0 </dev/null &
else
    "$@" "--sock=$sock" </dev/null &
fi
pid=$!
trap 'log "the job is ending: stopping Jupyter"; kill -TERM "$pid" 2>/dev/null' TERM INT HUP
trap 'date +%s >"$session/warned"; log "the job is near its time limit"' USR1

# Jupyter binds its socket (or writes the port it got) once it is set up; the
# workstation checks that it answers.
listening() {
    if [ -n "$address" ]; then
        port=$(sed -n 's/.*"port": *\([0-9][0-9]*\).*/\1/p' "$rundir/runtime/jpserver-$pid.json" 2>/dev/null)
        [ -n "$port" ]
    else
        [ -S "$sock" ]
    fi
}
port=""
i=0
while ! listening && kill -0 "$pid" 2>/dev/null && [ "$i" -lt "${TETHER_STARTUP:-900}" ]; do
    sleep 0.1
    i=$((i + 1))
done
if listening; then
    [ -n "$address" ] && sock=""
    put "$session/ready.json" "{\"job\": \"$job\", \"node\": \"$node\", \"sock\": \"$sock\", \
\"address\": \"$address\", \"port\": ${port:-null}, \"pid\": $pid, \"rundir\": \"$rundir\", \
\"sshd\": \"$sshd\", \"started\": $(date +%s)}"
    log "Jupyter is up on $node (job $job)"
else
    log "Jupyter did not start on $node"
fi

# `wait` returns early, with 128 + the signal, when a trapped signal arrives: wait until
# Jupyter is gone, then once more for its own exit status (bash keeps it for us).
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
done
wait "$pid"
status=$?
# The session may already belong to the next job (`up` after a cancel): touch only ours.
if [ -f "$session/job.json" ] && ! grep -q "\"stdout\": \"$job[;\"]" "$session/job.json"; then
    exit "$status"
fi
rm -f "$session/ready.json"
put "$session/ended.json" "{\"job\": \"$job\", \"how\": \"Jupyter exited with status $status\", \"at\": $(date +%s)}"
exit "$status"
