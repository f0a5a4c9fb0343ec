#!/usr/bin/env bash
# Refreshes every lock under locks/ from pyproject.toml and constraints/ (scripts/lock.py says
# which environments and why). Existing pins are kept where the inputs still allow them;
# --upgrade takes the newest allowed releases. A refresh is a reviewed commit of its own: CI
# fails while a lock and pyproject.toml disagree, and tests the environment the lock describes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 scripts/lock.py refresh "$@"
