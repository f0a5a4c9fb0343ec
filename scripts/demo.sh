#!/usr/bin/env bash
# The README's first command, for a fresh clone on a fresh machine: installs the project,
# exports the VGG16 weights (the default keras-vgg16 source) and the instant tier's
# feed-forward networks (magenta-arbitrary), starts a real styleserve-server on a free local
# port, stylises the bundled photo with the bundled painting through the real client, first
# in a fraction of a second (--preset instant), then by optimisation with its progress bar,
# and stops the server, whatever happens. Writes out/tubingen_starry_instant.png,
# out/tubingen_starry.png, out/previews/ (with the contact sheet) and out/server.log.
# The size and iterations keep it to a few minutes on a 2-core CPU; a GPU is used when present.
# DEMO_SIZE and DEMO_ITERATIONS override them, DEMO_OUT the output folder; scripts/venv.sh
# tells how to use an environment of your own.
set -euo pipefail
# shellcheck source=scripts/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$styleserve_root"

size=${DEMO_SIZE:-384}
iterations=${DEMO_ITERATIONS:-100}
out=${DEMO_OUT:-out}
mkdir -p "$out/previews"

# With no --source: every artifact a default server loads (keras-vgg16 and magenta-arbitrary).
styleserve-export

port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
styleserve-server --port "$port" --log-format text >"$out/server.log" 2>&1 &
server_pid=$!
stop_server() {
    if kill -TERM "$server_pid" 2>/dev/null; then
        wait "$server_pid" || true
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "Waiting for styleserve-server on 127.0.0.1:$port (log: $out/server.log)"
if ! python scripts/wait_healthy.py "127.0.0.1:$port" --pid "$server_pid" --timeout 600; then
    tail -n 20 "$out/server.log" >&2
    exit 1
fi

styleserve stylize examples/tubingen.jpg examples/starry_night.jpg \
    -o "$out/tubingen_starry_instant.png" --preset instant \
    --server "127.0.0.1:$port" --size "$size"
styleserve stylize examples/tubingen.jpg examples/starry_night.jpg \
    -o "$out/tubingen_starry.png" --previews "$out/previews" \
    --server "127.0.0.1:$port" --size "$size" --iterations "$iterations"

echo "Results: $out/tubingen_starry_instant.png (instant), $out/tubingen_starry.png" \
    "(optimised); previews and their contact sheet: $out/previews/"
