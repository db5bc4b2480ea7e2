#!/usr/bin/env bash
# Set up everything (first run only) and run the test suite.
#   ./scripts/test.sh                 -> ruff check and mypy (pyproject.toml), then python -m pytest -q tests
#   ./scripts/test.sh tests/x.py -k y -> python -m pytest -q tests/x.py -k y
# Exit code is pytest's, except "no tests collected" (5), which is a failure (1) here.
# Per-test timeout: DPOSER_TEST_TIMEOUT seconds (default 900, pytest-timeout).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"

# Each run gets its own DDS domain unless the caller picked one (tests may pick their own too).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
export MPLBACKEND="${MPLBACKEND:-Agg}"

args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(tests)

if [[ ${#args[@]} -eq 1 && "${args[0]}" == "tests" ]]; then  # the whole suite: the lint and type check first
    ruff check dposer_ros tests bench scripts launch || { echo "[test.sh] ruff found problems (see above)" >&2; exit 1; }
    mypy || { echo "[test.sh] mypy found problems (see above)" >&2; exit 1; }  # the library layers (files in pyproject.toml)
fi

set +e
python -m pytest -q --timeout="${DPOSER_TEST_TIMEOUT:-900}" "${args[@]}"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "[test.sh] pytest collected no tests: treating as failure" >&2
    exit 1
fi
exit $rc
