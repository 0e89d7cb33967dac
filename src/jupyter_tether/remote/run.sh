# jupyter-tether: run one Jupyter server in the foreground.
#
# Started detached (tmux, screen or setsid) by the agent; the same script serves any
# later restart.  Everything specific to this server (argv, PATH, nice, modules) comes
# from launch.env beside it, which holds no secrets: the token is in a 0600 Jupyter
# config file named by --config, so it never appears in argv or the environment.
set -u
here=$(dirname "$0")
. "$here/launch.env"
unset JUPYTER_PORT JUPYTER_TOKEN JUPYTER_TOKEN_FILE
umask 077
cd "$HOME" || exit 1
# Our own pid first, so a failure before Jupyter starts (a module that won't load) is
# seen at once instead of at the start-up deadline; replaced by Jupyter's pid below.
echo $$ >"$TETHER_PIDFILE"

if [ -n "$TETHER_MODULES" ]; then
    if ! command -v module >/dev/null 2>&1 && [ -n "$TETHER_MODULE_INIT" ]; then
        . "$TETHER_MODULE_INIT"
    fi
    for m in $TETHER_MODULES; do
        module load "$m" || {
            echo "jupyter-tether: \`module load $m\` failed" >>"$TETHER_LOG"
            exit 3
        }
    done
fi

if [ -t 1 ]; then
    # In tmux/screen: show the output in the pane (for `tether attach`) and keep the log.
    sh -c 'echo $$ >"$0"; exec "$@"' "$TETHER_PIDFILE" nice -n "$TETHER_NICE" "$@" \
        </dev/null 2>&1 | tee -a "$TETHER_LOG"
else
    exec nice -n "$TETHER_NICE" "$@" </dev/null >>"$TETHER_LOG" 2>&1
fi
