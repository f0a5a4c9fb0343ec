#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run calls this very script, so the two cannot
# drift): sets up .venv when needed, then runs the whole suite. Arguments go to pytest, e.g.
#   scripts/test.sh tests/deploy -k manifests
set -euo pipefail
# shellcheck source=scripts/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$styleserve_root"
exec python -m pytest -q "$@"
