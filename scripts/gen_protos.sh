#!/usr/bin/env bash
# Regenerates the committed stubs in client/styleserve/v1 from protos/ (grpcio-tools, with .pyi).
# Usage: scripts/gen_protos.sh [OUT_ROOT]   (default: client; tests pass a temporary folder)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/client}
mkdir -p "$out/styleserve/v1"
python -m grpc_tools.protoc -I "$root/protos" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root/protos/styleserve/v1/style_transfer.proto"
