#!/usr/bin/env bash
# Install everything the test suite needs, idempotently (quick when all is there):
#   1. Debian packages: installed when run as root, otherwise listed for you to install;
#   2. uv (with pip, when it is not on PATH);
#   3. the project's virtual environment .venv with the package and its dev extras.
# Used by `make setup` (and so `make test`) and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    openssh-server openssh-client tmux screen iproute2 procps util-linux passwd
    chromium chromium-driver environment-modules autossh curl ca-certificates tmpreaper
    make python3 python3-pip python3-venv zsh tcsh dash cron
    slurmctld slurmd slurm-client munge sshfs fuse3
    rsync
)
VENV=${VENV:-.venv}

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages (install them as root): ${missing[*]}"
        log "  sudo apt-get install ${missing[*]}"
    else
        log "installing Debian packages: ${missing[*]}"
        # Packages like openssh-server start their daemon on install; the tests start
        # their own servers, so forbid that (policy-rc.d exit 101 = "action forbidden").
        policy=/usr/sbin/policy-rc.d
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
    fi
fi

# uv builds the dev venv here and, in the tests, the sandbox servers' Jupyter
# environment. It is also a test dependency, so after this step it lives in the venv.
if command -v uv >/dev/null 2>&1; then
    uv=(uv)
else
    if ! python3 -m uv --version >/dev/null 2>&1; then
        log "installing uv with pip"
        python3 -m pip install --quiet uv ||
            python3 -m pip install --quiet --break-system-packages uv
    fi
    uv=(python3 -m uv)
fi

if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    "${uv[@]}" venv --quiet --python "$(command -v python3)" "$VENV"
fi
"${uv[@]}" pip install --quiet --python "$VENV/bin/python" -e '.[dev]'
log "ready ($("$VENV/bin/python" --version), $("${uv[@]}" --version))"
