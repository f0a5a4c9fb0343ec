# Sourced by scripts/test.sh, scripts/check.sh and scripts/demo.sh (and so by .ci/run): makes
# .venv equal to locks/dev-cpu.txt and activates it. Equal, not added to: uv's sync removes what
# left the lock and puts back what drifted, so a developer's old .venv and CI's fresh one hold the
# same packages at the same versions. The project itself is then installed editable, built by the
# locked setuptools. The sync is skipped while the lock and pyproject.toml are as they were at the
# last one, so a second run starts at once.
#   VENV_DIR=DIR      use that environment instead of .venv
#   PYTHON=python3.x  the interpreter that creates it (CPython 3.11, the locks' interpreter)
#   SKIP_INSTALL=1    activate the environment as it is (one you manage yourself)
# torch's CPU build comes from pip's configured wheel house where pip has one (the project's own
# machines), else from PyTorch's CPU index; UV_FIND_LINKS or UV_EXTRA_INDEX_URL override both.
# shellcheck shell=bash

styleserve_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
styleserve_venv=${VENV_DIR:-$styleserve_root/.venv}
styleserve_lock=$styleserve_root/locks/dev-cpu.txt

# The lines of one package (its pin and hashes) in a lock, for pip's hash-checking mode.
styleserve_lock_entry() {
    awk -v name="$1==" 'index($0, name) == 1 { on = 1 } on { print } on && !/\\$/ { exit }' \
        "$styleserve_lock"
}

styleserve_setup_venv() {
    local python=${PYTHON:-python3} stamp="$styleserve_venv/.styleserve-install" wanted bootstrap
    wanted=$(cat "$styleserve_lock" "$styleserve_root/pyproject.toml" | sha256sum)
    if [[ ${SKIP_INSTALL:-} == 1 || (-f $stamp && $(<"$stamp") == "$wanted") ]]; then
        return 0
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "error: the project's environment is locked for CPython 3.11 (locks/, as CI and the" \
            "image run); '$python' is not 3.11. Run again with PYTHON=/path/to/python3.11, or" \
            "install the library from pyproject.toml's floors yourself (pip install -e '.[server,dev]'" \
            "with SKIP_INSTALL=1)" >&2
        return 1
    fi
    if [[ ! -x $styleserve_venv/bin/python ]]; then
        echo "Creating $styleserve_venv" >&2
        "$python" -m venv "$styleserve_venv"
    fi
    # uv, the installer, is itself in the lock: pip installs exactly that release, hash-checked.
    bootstrap=$(mktemp)
    styleserve_lock_entry uv >"$bootstrap"
    "$styleserve_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$bootstrap"
    rm -f "$bootstrap"
    echo "Syncing $styleserve_venv to locks/dev-cpu.txt" >&2
    local torch_source
    mapfile -t torch_source < <("$python" "$styleserve_root/scripts/lock.py" torch-source)
    "$styleserve_venv/bin/uv" pip sync --quiet --python "$styleserve_venv/bin/python" \
        --require-hashes "${torch_source[@]}" "$styleserve_lock"
    "$styleserve_venv/bin/uv" pip install --quiet --python "$styleserve_venv/bin/python" \
        --no-deps --no-build-isolation -e "$styleserve_root"
    echo "$wanted" >"$stamp"
}

styleserve_setup_venv
# shellcheck source=/dev/null
source "$styleserve_venv/bin/activate"
