# Sourced by scripts/test.sh and scripts/demo.sh (and so by .ci/run): creates .venv on a fresh
# machine, installs the project with its server and dev extras, and activates it. The install
# is skipped while pyproject.toml and the constraints are as they were at the last one, so a
# second run starts at once. constraints/cpu.txt pins the CPU build of torch (a plain "torch"
# would pull the multi-GB CUDA build).
#   VENV_DIR=DIR      use that environment instead of .venv
#   PYTHON=python3.x  the interpreter that creates it
#   SKIP_INSTALL=1    activate the environment as it is (one you manage yourself)
# shellcheck shell=bash

styleserve_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
styleserve_venv=${VENV_DIR:-$styleserve_root/.venv}

styleserve_setup_venv() {
    local python=${PYTHON:-python3} stamp="$styleserve_venv/.styleserve-install" wanted
    wanted=$(cat "$styleserve_root/pyproject.toml" "$styleserve_root/constraints/cpu.txt" | sha256sum)
    if [[ ${SKIP_INSTALL:-} == 1 || (-f $stamp && $(<"$stamp") == "$wanted") ]]; then
        return 0
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: styleserve needs Python 3.10 or newer; '$python' is not. Install one and" \
            "run again with PYTHON=/path/to/python3.11" >&2
        return 1
    fi
    if [[ ! -x $styleserve_venv/bin/python ]]; then
        echo "Creating $styleserve_venv" >&2
        "$python" -m venv "$styleserve_venv"
    fi
    echo "Installing styleserve[server,dev] into $styleserve_venv" >&2
    "$styleserve_venv/bin/python" -m pip install --disable-pip-version-check \
        -c "$styleserve_root/constraints/cpu.txt" -e "${styleserve_root}[server,dev]"
    echo "$wanted" >"$stamp"
}

styleserve_setup_venv
# shellcheck source=/dev/null
source "$styleserve_venv/bin/activate"
