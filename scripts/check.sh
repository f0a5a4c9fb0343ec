#!/usr/bin/env bash
# The static gates CI runs before the tests (.ci/run calls this script): the locks agree with
# pyproject.toml and .venv equals locks/dev-cpu.txt (scripts/lock.py), ruff's lint and format
# check over the Python code, mypy (strict on the client, the SDK users type-check against;
# its defaults on the server and the exporter), the docs site's strict build, and buf's lint of
# the contract plus its breaking-change check against the contract as v1 first shipped (every
# change since must be wire- and source-compatible with it). buf comes from the npm registry
# (@bufbuild/buf, pinned), installed once into .cache/buf.
set -euo pipefail
# shellcheck source=scripts/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$styleserve_root"

buf_version=1.75.0
# The commit where styleserve.v1 landed as 0.1.0.
v1_baseline=f216d5a

python scripts/lock.py check
python scripts/lock.py check-env locks/dev-cpu.txt
ruff check .
ruff format --check .
mypy --strict client/styleserve
mypy server/styleserve_server model_export/styleserve_export
# The docs site (mkdocs.yml): a broken link or anchor, or a reference page gone missing, fails it.
site_dir=$(mktemp -d)
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$site_dir"

buf=.cache/buf/node_modules/.bin/buf
if ! command -v npm >/dev/null; then
    echo "check: buf comes from the npm registry: install Node.js and npm (apt-get install npm)" >&2
    exit 1
fi
if [[ ! -x $buf ]] || [[ $("$buf" --version) != "$buf_version" ]]; then
    npm install --silent --no-audit --no-fund --prefix .cache/buf "@bufbuild/buf@$buf_version"
fi
(cd protos && "../$buf" lint)
# buf clones the repository to read the baseline, only 50 commits deep unless told: the whole
# history since it, so that the baseline stays reachable as main grows.
depth=$(git rev-list --count "$v1_baseline..HEAD")
"$buf" breaking protos --against ".git#ref=$v1_baseline,depth=$((depth + 1)),subdir=protos"
echo "check: locks, ruff, mypy, docs and buf clean"
