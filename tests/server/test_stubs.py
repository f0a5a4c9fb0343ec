"""The committed stubs are exactly what the .proto generates today."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "client" / "styleserve" / "v1"


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in (tmp_path / "styleserve" / "v1").iterdir())
    assert generated == [f"style_transfer_pb2{end}" for end in (".py", ".pyi", "_grpc.py")]
    for name in generated:
        fresh = (tmp_path / "styleserve" / "v1" / name).read_bytes()
        assert fresh == (COMMITTED / name).read_bytes(), (
            f"{name} is stale: run scripts/gen_protos.sh and commit the result"
        )
