# shellcheck shell=bash
# Source this file (bash) to use the dposer_ros environment made by scripts/bootstrap.sh:
#   source scripts/env.sh
# - activates <repo>/.venv (or $DPOSER_VENV),
# - puts the venv on AMENT_PREFIX_PATH (rclpy finds the ROS wheels' packages through it),
# - sources ros_ws/install/setup.bash (dposer_msgs, dposer_ros) when it has been built,
# - keeps DDS discovery on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
# Safe to source from scripts running with `set -euo pipefail`.

_dposer_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_dposer_venv="${DPOSER_VENV:-$_dposer_root/.venv}"
case "$-" in *u*) _dposer_had_u=1; set +u ;; *) _dposer_had_u=0 ;; esac

if [ -f "$_dposer_venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$_dposer_venv/bin/activate"
    case ":${AMENT_PREFIX_PATH}:" in
        *":$_dposer_venv:"*) ;;
        *) export AMENT_PREFIX_PATH="$_dposer_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
    esac
    if [ -f "$_dposer_root/ros_ws/install/setup.bash" ]; then
        # shellcheck disable=SC1091
        . "$_dposer_root/ros_ws/install/setup.bash"
    fi
else
    echo "[env.sh] $_dposer_venv not found: run scripts/bootstrap.sh first" >&2
fi

export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export DPOSER_ROOT="$_dposer_root"

[ "$_dposer_had_u" = 1 ] && set -u
unset _dposer_root _dposer_venv _dposer_had_u
