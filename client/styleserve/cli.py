"""The ``styleserve`` command: stylise pictures and describe a server from a shell.

Options left off the command line are not sent, so the server applies the chosen preset's
values; the defaults ``--help`` shows are read from ``styleserve.options``, the same place
the server reads them. Failures end in one line naming the gRPC status and a non-zero exit;
Ctrl-C cancels the job on the server and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from styleserve import __version__
from styleserve.client import Client
from styleserve.contact_sheet import contact_sheet
from styleserve.errors import StyleserveError
from styleserve.events import Preview, Result, missing_result
from styleserve.info import ServerInfo
from styleserve.options import INITS, METHODS, PRESETS
from styleserve.pictures import encode_picture, write_atomically
from styleserve.progress import ProgressBar

__all__ = ["main"]

DEFAULT_SERVER = "127.0.0.1:50051"
# Exit status of a process ended by SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
# Previews requested with --previews but no --preview-every: about this many per job.
_PREVIEWS_PER_JOB = 10
CONTACT_SHEET = "contact_sheet.png"
_LOSS_NAMES = {"content_weight": "content", "style_weight": "style", "tv_weight": "total-variation"}


def _preset_defaults(name: str) -> str:
    """Help text suffix with each preset's value of option ``name``."""
    values = ", ".join(f"{preset}: {getattr(o, name)}" for preset, o in PRESETS.items())
    return f"(preset's; {values})"


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 1,0.5; got {text!r}"
        ) from None


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("STYLESERVE_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help="server address, or dns:///name:port to spread calls over every address of name "
        "(default: $STYLESERVE_SERVER or %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("STYLESERVE_TOKEN"),
        help="bearer token (default: $STYLESERVE_TOKEN)",
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of the call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleserve", description="Neural style transfer on a styleserve server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    stylize = commands.add_parser(
        "stylize",
        help="paint a content picture in the style of one or more style pictures",
        description="Options left out take the preset's values.",
    )
    stylize.set_defaults(run=_stylize)
    stylize.add_argument("content", type=Path, help="content picture (PNG, JPEG or WebP)")
    stylize.add_argument("styles", type=Path, nargs="+", metavar="style", help="style picture(s)")
    stylize.add_argument(
        "-o", "--output", type=Path, required=True, help="result file: .png, .jpg or .webp"
    )
    _add_connection(stylize)
    stylize.add_argument("--preset", choices=sorted(PRESETS), help="starting options (default)")
    stylize.add_argument(
        "--method",
        choices=METHODS,
        help="optimization (Gatys) or feed_forward (the instant tier, a fraction of a second) "
        f"{_preset_defaults('method')}",
    )
    stylize.add_argument(
        "--init",
        choices=[init for init in INITS if init != "image"],
        help=f"where the optimised picture starts {_preset_defaults('init')}",
    )
    stylize.add_argument(
        "--style-strength",
        type=float,
        metavar="S",
        help="feed-forward pictures: 0 keeps the content's own style, 1 takes the styles' "
        f"{_preset_defaults('style_strength')}",
    )
    sizes = ", ".join(
        f"{name}: {o.width}x{o.height}" if o.width and o.height else f"{name}: {o.size}"
        for name, o in PRESETS.items()
    )
    stylize.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help=f"longest output side, keeping the content's aspect ratio (preset's; {sizes})",
    )
    stylize.add_argument(
        "--iterations", type=int, metavar="N", help=f"iterations {_preset_defaults('iterations')}"
    )
    stylize.add_argument(
        "--style-blend",
        type=_weights,
        metavar="W,W,...",
        help="one weight per style picture (default: equal shares)",
    )
    for name in ("content_weight", "style_weight", "tv_weight"):
        stylize.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            metavar="W",
            help=f"weight of the {_LOSS_NAMES[name]} loss {_preset_defaults(name)}",
        )
    stylize.add_argument(
        "--preserve-color",
        action=argparse.BooleanOptionalAction,
        help=f"keep the content's colours {_preset_defaults('preserve_color')}",
    )
    stylize.add_argument("--seed", type=int, metavar="N", help="random seed (default: drawn)")
    stylize.add_argument("--previews", type=Path, metavar="DIR", help="save previews here")
    stylize.add_argument(
        "--preview-every",
        type=int,
        metavar="N",
        help=f"a preview every N iterations (default with --previews: ~{_PREVIEWS_PER_JOB} a job)",
    )

    info = commands.add_parser("info", help="describe the server")
    info.set_defaults(run=_info)
    _add_connection(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _job_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    output_format = _SUFFIX_FORMATS.get(args.output.suffix.lower())
    if output_format is None:
        parser.error(f"-o: name a .png, .jpg or .webp file, got {str(args.output)!r}")
    if not args.output.parent.is_dir():
        parser.error(f"-o: the folder {str(args.output.parent)!r} does not exist; create it first")
    preview_every = args.preview_every
    if preview_every is not None and args.previews is None:
        parser.error("--preview-every needs --previews DIR to save the previews in")
    if args.previews is not None and preview_every is None:
        # Iterations run in every coarse-to-fine stage, so a job runs iterations x stages.
        preset = PRESETS[args.preset or "default"]
        total = (args.iterations or preset.iterations) * len(preset.scales)
        preview_every = max(1, total // _PREVIEWS_PER_JOB)
    return {
        "preset": args.preset,
        "method": args.method,
        "init": args.init,
        "style_strength": args.style_strength,
        "size": args.size,
        # A preset's fixed width x height would take precedence over --size.
        "width": 0 if args.size else None,
        "height": 0 if args.size else None,
        "iterations": args.iterations,
        "style_blend": args.style_blend,
        "content_weight": args.content_weight,
        "style_weight": args.style_weight,
        "tv_weight": args.tv_weight,
        "preserve_color": args.preserve_color,
        "seed": args.seed,
        "preview_every": preview_every,
        "output_format": output_format,
    }


def _stylize(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = _job_options(args, parser)
    previews: list[Preview] = []
    if args.previews is not None:
        args.previews.mkdir(parents=True, exist_ok=True)
    result: Result | None = None
    with (
        Client(args.server, token=args.token, timeout=args.timeout) as client,
        contextlib.closing(client.stream(args.content, args.styles, **options)) as events,
        ProgressBar() as bar,
    ):
        for event in events:
            bar.show(event)
            if isinstance(event, Preview):
                event.save(args.previews / f"preview_{event.iteration:05d}{args.output.suffix}")
                previews.append(event)
            elif isinstance(event, Result):
                event.save(args.output)
                result = event
    if result is None:
        raise missing_result()
    if previews:
        sheet = contact_sheet([(f"#{p.iteration}", p.image()) for p in previews])
        write_atomically(args.previews / CONTACT_SHEET, encode_picture(sheet))
    print(f"wrote {args.output} ({result.width}x{result.height}, {_made_by(result)})")
    return 0


def _made_by(result: Result) -> str:
    """How the result was made, for the closing line."""
    receipt, seconds = result.receipt, result.timings.total_seconds
    if result.options.method == "feed_forward" and receipt.feed_forward is not None:
        networks = receipt.feed_forward
        return f"feed-forward in {seconds:.2f} s, {networks.name} on {networks.execution_provider}"
    return (
        f"{result.iterations} iterations in {seconds:.1f} s, loss {result.losses.total:.4g},"
        f" seed {receipt.seed}, {receipt.backbone} on {receipt.device}"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def _describe(info: ServerInfo, target: str) -> str:
    limits = info.limits
    lines = [
        f"server     {target}",
        f"version    {info.version} (torch {info.torch_version})",
        f"device     {info.device}",
        f"backbones  {', '.join(info.backbones)}",
        f"capacity   {limits.job_slots} running, {limits.queue_size} queued",
        f"limits     output side <= {limits.max_output_side} px, <= {limits.max_iterations}"
        f" iterations, <= {limits.max_styles} styles, pictures <= {_mib(limits.max_image_bytes)}"
        f" and {limits.max_input_pixels / 1e6:g} Mpx",
    ]
    if info.feed_forward is not None:
        networks = info.feed_forward
        lines.append(f"instant    {networks.name} on {networks.execution_provider}")
    if info.precision_choice is not None:
        lines.append(f"precision  auto is {info.precision_choice.reason}")
    for name, o in info.presets.items():
        size = f"{o.width}x{o.height}" if o.width and o.height else f"{o.size} px"
        if o.method == "feed_forward":
            lines.append(
                f"preset     {name}: {size}, feed-forward, style strength {o.style_strength:g}"
            )
            continue
        lines.append(
            f"preset     {name}: {size}, {o.iterations} x {o.optimizer}, {o.backbone},"
            f" init {o.init}, weights {o.content_weight:g}/{o.style_weight:g}/{o.tv_weight:g}"
        )
    return "\n".join(lines)


def _info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with Client(args.server, token=args.token, timeout=args.timeout) as client:
        info = client.info()
    print(json.dumps(info.to_dict(), indent=2) if args.json else _describe(info, args.server))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args, parser))
    except StyleserveError as err:
        print(f"styleserve: {err.code.name}: {err.details}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"styleserve: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("styleserve: interrupted; the job was cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
