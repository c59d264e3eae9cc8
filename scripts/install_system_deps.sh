#!/usr/bin/env bash
# System libraries that ffcv 1.0.2 compiles against (OpenCV, TurboJPEG, found through pkg-config),
# then ffcv itself into the venv. Idempotent: installs only what is missing; where apt-get is absent
# (macOS, a cluster node without root) it says so and leaves the fallback loader to do the work.
# Usage: scripts/install_system_deps.sh [VENV]   (default .venv; VENV=none skips the pip step)
set -euo pipefail

VENV="${1:-.venv}"
PACKAGES=(pkg-config libturbojpeg0-dev libopencv-dev)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system deps: ${PACKAGES[*]} already installed"
elif command -v pkg-config >/dev/null 2>&1 && pkg-config --exists opencv4 libturbojpeg; then
    echo "system deps: opencv4 and libturbojpeg found by pkg-config (not from Debian packages)"
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps: apt-get not found; install ${missing[*]} (or their equivalents) by hand for ffcv;" \
         "without them the imagenet dataset uses the torchvision fallback" >&2
    exit 0
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
            echo "system deps: not root and no sudo; install ${missing[*]} by hand for ffcv" >&2
            exit 0
        fi
    fi
    echo "system deps: installing ${missing[*]}"
    # apt_get.sh: apt-get that waits (at most 10 min) while another apt-get or dpkg holds the lock.
    $SUDO bash "$(dirname "$0")/apt_get.sh" update -q
    $SUDO bash "$(dirname "$0")/apt_get.sh" install -y -q --no-install-recommends "${missing[@]}"
fi

# SLURM (tests/test_slurm.py, profiles/slurm): Debian's munge, slurmctld, slurmd, slurmdbd, slurm-client
# and mariadb-server, so that the test's single-node cluster starts without minutes of apt-get of its
# own. Where they cannot be installed the test skips and says why; BENCH_SLURM=0 leaves them out.
if [ "${BENCH_SLURM:-1}" != "0" ]; then
    bash "$(dirname "$0")/slurm_single_node.sh" install \
        || echo "system deps: SLURM packages not installed; tests/test_slurm.py will skip" >&2
fi

if [ "$VENV" = "none" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "system deps: no venv at $VENV; create it first (make setup), then rerun" >&2
    exit 1
fi
if "$VENV/bin/python" -c "import ffcv" >/dev/null 2>&1; then
    echo "ffcv: already installed in $VENV"
else
    echo "ffcv: building 1.0.2 into $VENV"
    # ffcv's C extension compiles here against the libraries above; pip brings its Python
    # dependencies (numba, opencv-python, terminaltables, fastargs, ...).
    "$VENV/bin/pip" install --quiet ffcv==1.0.2
fi
