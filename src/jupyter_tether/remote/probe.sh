# jupyter-tether probe: everything `tether up` needs to know about a server, in one round trip.
#
# Runs as `sh -s` (POSIX sh, whatever the login shell is), reads nothing, changes nothing.
# Each fact is one line "@@T key=value" so that whatever a login rc file prints cannot be
# mistaken for a fact.  Variables set by the caller before this text:
#   TETHER_STATE   the remote state directory (usually ~/.local/state/jupyter-tether)
#   TETHER_DATA    the remote data directory (usually ~/.local/share/jupyter-tether)

fact() { printf '@@T %s=%s\n' "$1" "$2"; }

fact probe_version 1
fact os "$(uname -s 2>/dev/null)"
fact arch "$(uname -m 2>/dev/null)"
fact kernel "$(uname -r 2>/dev/null)"
fact hostname "$(hostname 2>/dev/null || uname -n)"
fact uid "$(id -u)"
fact user "$(id -un 2>/dev/null)"
fact home "$HOME"
fact shell "${SHELL:-}"
fact xdg_runtime_dir "${XDG_RUNTIME_DIR:-}"
if [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -e "/var/lib/systemd/linger/$(id -un 2>/dev/null)" ]; then
    fact linger yes
else
    fact linger no
fi

# glibc version: getconf knows it on glibc systems; musl has no such variable.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -z "$glibc" ] && command -v ldd >/dev/null 2>&1; then
    glibc=$(ldd --version 2>&1 | awk 'NR==1 && /GLIBC|GNU libc/ {print $NF}')
fi
fact glibc "$glibc"

# Free space in home, in KiB (POSIX df -P: 4th column of the 2nd line).
fact home_free_kb "$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {print $4}')"

# The login shell's PATH and module system: `module` and many PATH edits only exist in
# login shells.  Bounded by `timeout` where it exists; a marker survives rc-file chatter.
login_env() {
    case "${SHELL:-}" in
        */csh | */tcsh) set -- "$SHELL" -c ;;
        */fish) set -- "$SHELL" -l -c ;;
        "") set -- sh -c ;;
        *) set -- "$SHELL" -l -c ;;
    esac
    script='echo; echo "@@P PATH=$PATH"; echo "@@P MODULESHOME=$MODULESHOME"; echo "@@P LMOD_CMD=$LMOD_CMD"; echo "@@P SLURM_CONF=$SLURM_CONF"'
    if command -v timeout >/dev/null 2>&1; then
        timeout 10 "$@" "$script" </dev/null 2>/dev/null
    else
        "$@" "$script" </dev/null 2>/dev/null
    fi
}
login=$(login_env)
login_path=$(printf '%s\n' "$login" | sed -n 's/^@@P PATH=//p' | tail -n 1)
[ -n "$login_path" ] || login_path=$PATH
fact login_path "$login_path"
moduleshome=$(printf '%s\n' "$login" | sed -n 's/^@@P MODULESHOME=//p' | tail -n 1)
lmod_cmd=$(printf '%s\n' "$login" | sed -n 's/^@@P LMOD_CMD=//p' | tail -n 1)
[ -n "$moduleshome" ] || moduleshome=${MODULESHOME:-}
for init in "$moduleshome/init/sh" /usr/share/modules/init/sh /usr/share/lmod/lmod/init/sh \
    /etc/profile.d/modules.sh /etc/profile.d/lmod.sh; do
    case "$init" in /init/sh) continue ;; esac
    if [ -r "$init" ]; then
        fact module_init "$init"
        break
    fi
done
fact lmod "${lmod_cmd:+yes}"

# Tools, searched on the login PATH (rsync: `tether sync` moves big transfers with it).
PATH=$login_path:$PATH
for tool in tmux screen setsid uv sbatch curl rsync; do
    fact "tool_$tool" "$(command -v "$tool" 2>/dev/null)"
done

# A Slurm cluster has sbatch *and* a configuration its clients read: $SLURM_CONF, the
# packaged paths, or the cache a configless slurmd/sackd keeps (Slurm's "configless"
# docs). sbatch alone, e.g. slurm-client installed on a workstation, is no cluster.
login_slurm_conf=$(printf '%s\n' "$login" | sed -n 's/^@@P SLURM_CONF=//p' | tail -n 1)
for conf in "$login_slurm_conf" "${SLURM_CONF:-}" /etc/slurm/slurm.conf \
    /etc/slurm-llnl/slurm.conf /run/slurm/conf/slurm.conf /var/spool/slurmd/conf-cache/slurm.conf; do
    if [ -n "$conf" ] && [ -r "$conf" ]; then
        fact slurm_conf "$conf"
        break
    fi
done

# python3 candidates with versions, best effort and bounded to a few names.
for py in python3 python3.14 python3.13 python3.12 python3.11 python3.10 python3.9 python3.8 \
    /usr/bin/python3 /usr/local/bin/python3; do
    p=$(command -v "$py" 2>/dev/null) || continue
    v=$("$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
    fact python "$p $v"
done

# Jupyter on the login PATH, with the interpreter its script runs under.
jupyter=$(command -v jupyter 2>/dev/null)
fact jupyter "$jupyter"
if [ -n "$jupyter" ] && [ -r "$jupyter" ]; then
    IFS= read -r shebang <"$jupyter" || shebang=
    fact jupyter_shebang "$shebang"
fi

# Servers tether already started here (the agent's state files, one JSON line each).
if [ -d "$TETHER_STATE/servers" ]; then
    for f in "$TETHER_STATE"/servers/*/state.json; do
        [ -r "$f" ] || continue
        fact server "$(tr -d '\n' <"$f")"
    done
fi
# Provisioning: tether's own uv and the managed environments that are complete
# (a marker written only after the import check), so an unchanged spec costs no round trip.
fact tether_data "$TETHER_DATA"
if [ -x "$TETHER_DATA/bin/uv" ]; then
    fact tether_uv "$TETHER_DATA/bin/uv $("$TETHER_DATA/bin/uv" --version 2>/dev/null | awk '{print $2}')"
fi
if [ -d "$TETHER_DATA/envs" ]; then
    for m in "$TETHER_DATA"/envs/*/.tether-env.json; do
        [ -r "$m" ] || continue
        d=${m%/.tether-env.json}
        fact tether_env "${d##*/}"
    done
fi
fact done 1
