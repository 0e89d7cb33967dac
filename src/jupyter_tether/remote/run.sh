# jupyter-tether: run one Jupyter server in the foreground, and keep it running.
#
# Started detached (tmux, screen or setsid) by the agent; the autostart hook runs the
# same thing after a reboot.  Everything specific to this server (argv, PATH, nice,
# modules, restart limits) comes from launch.env beside it, which holds no secrets: the
# token is in a 0600 Jupyter config file named by --config, so it never appears in argv
# or the environment.
#
# The loop is the server-side watchdog: when Jupyter dies (a crash, the OOM killer,
# kill -9) after it had become ready, it is started again on the same socket with the
# same token and root_dir.  It stops on `tether down` (the "stop" file), on a clean exit
# (File > Shut Down), or after TETHER_MAX_STARTS starts within TETHER_RESTART_WINDOW
# seconds (a crash loop), leaving the reason in the "failed" file for `tether ls`.
set -u
here=$(dirname "$0")
. "$here/launch.env"
unset JUPYTER_PORT JUPYTER_TOKEN JUPYTER_TOKEN_FILE
umask 077
cd "$HOME" || exit 1
# Our own pid first, so a failure before Jupyter starts (a module that won't load) is
# seen at once instead of at the start-up deadline; replaced by Jupyter's pid below.
echo $$ >"$TETHER_PIDFILE"
echo $$ >"$TETHER_RUNDIR/run.pid"
rm -f "$TETHER_RUNDIR/failed" "$TETHER_RUNDIR/exit"

log() { printf 'jupyter-tether: %s\n' "$*" >>"$TETHER_LOG"; }

if [ -n "$TETHER_MODULES" ]; then
    if ! command -v module >/dev/null 2>&1 && [ -n "$TETHER_MODULE_INIT" ]; then
        . "$TETHER_MODULE_INIT"
    fi
    for m in $TETHER_MODULES; do
        module load "$m" || {
            log "\`module load $m\` failed"
            exit 3
        }
    done
fi

# Age-based /tmp cleaners (systemd-tmpfiles' "q /tmp 1777 root root 10d" on RHEL,
# tmpreaper on Debian) remove what nobody touched for days: Jupyter's socket, the
# kernels' ipc sockets and connection files among them (SECURITY.md: Robustness).
# systemd-tmpfiles skips files with the sticky bit set (tmpfiles.d(5), as the XDG base
# directory spec recommends); the others go by atime/mtime. So, while the server runs, mark and touch
# everything in the run directory every TETHER_KEEP_EVERY seconds.
keep() {
    while [ ! -e "$TETHER_RUNDIR/stop" ]; do
        find "$TETHER_RUNDIR" ! -type d -exec chmod +t {} + 2>/dev/null
        find "$TETHER_RUNDIR" -exec touch -c {} + 2>/dev/null
        touch -c "$TETHER_RUNDIR/.." 2>/dev/null
        i=0
        while [ "$i" -lt "$TETHER_KEEP_EVERY" ]; do
            kill -0 "$1" 2>/dev/null || return 0
            sleep 1
            i=$((i + 1))
        done
    done
}
keep $$ </dev/null >/dev/null 2>&1 &
echo $! >"$TETHER_RUNDIR/keep.pid"
trap 'kill "$(cat "$TETHER_RUNDIR/keep.pid" 2>/dev/null)" 2>/dev/null' EXIT

starts=""
while :; do
    now=$(date +%s)
    recent=""
    for t in $starts; do
        [ $((now - t)) -lt "$TETHER_RESTART_WINDOW" ] && recent="$recent $t"
    done
    starts="$recent $now"
    set -f
    # shellcheck disable=SC2086
    count=$(printf '%s\n' $starts | wc -l)
    set +f
    if [ "$count" -gt "$TETHER_MAX_STARTS" ]; then
        msg="crash loop: Jupyter exited $((count - 1)) times within $TETHER_RESTART_WINDOW s"
        log "$msg; not restarting it again"
        echo "$msg" >"$TETHER_RUNDIR/failed"
        exit 4
    fi
    # `sh -c ... exec` keeps Jupyter's pid in the pid file; its exit status lands in "exit".
    if [ -t 1 ]; then
        # In tmux/screen: show the output in the pane (for `tether attach`) and keep the log.
        {
            sh -c 'echo $$ >"$0"; exec "$@"' "$TETHER_PIDFILE" nice -n "$TETHER_NICE" "$@" \
                </dev/null 2>&1
            echo $? >"$TETHER_RUNDIR/exit"
        } | tee -a "$TETHER_LOG"
    else
        sh -c 'echo $$ >"$0"; exec "$@"' "$TETHER_PIDFILE" nice -n "$TETHER_NICE" "$@" \
            </dev/null >>"$TETHER_LOG" 2>&1
        echo $? >"$TETHER_RUNDIR/exit"
    fi
    status=$(cat "$TETHER_RUNDIR/exit" 2>/dev/null || echo unknown)
    if [ -e "$TETHER_RUNDIR/stop" ]; then
        exit 0
    fi
    if [ ! -e "$TETHER_RUNDIR/ready" ]; then
        log "Jupyter exited (status $status) before it became ready"
        exit 5
    fi
    if [ "$status" = 0 ]; then
        log "Jupyter shut down cleanly; not restarting it"
        echo "stopped: Jupyter was shut down from inside" >"$TETHER_RUNDIR/failed"
        exit 0
    fi
    log "Jupyter exited (status $status); starting it again"
    sleep 1
done
