#!/usr/bin/env bash
# Main job: set up everything (first run only) and run the dposer demo.
#   ./scripts/demo.sh [args passed to `dposer demo`]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec dposer demo "$@"
