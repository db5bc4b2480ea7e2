#!/usr/bin/env bash
# Put a COLCON_IGNORE into each ros_ws/src/vendor package that the current environment already provides, and take
# it away where it does not (ros_ws/src/vendor/README.md). Run with the environment colcon will build against
# (bootstrap.sh: the venv only; a full installation: after sourcing /opt/ros/<distro>/setup.bash).
set -euo pipefail
VENDOR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/ros_ws/src/vendor"
PY="${PYTHON:-python3}"
for pkg in "$VENDOR"/*/; do
    name="$(basename "$pkg")"
    if "$PY" -c "import importlib, sys; sys.exit(0 if importlib.util.find_spec('$name') else 1)" 2>/dev/null; then
        touch "$pkg/COLCON_IGNORE"
        echo "vendor: $name is provided by the environment: not built here"
    else
        rm -f "$pkg/COLCON_IGNORE"
        echo "vendor: $name is not provided by the environment: built from ros_ws/src/vendor/$name"
    fi
done
