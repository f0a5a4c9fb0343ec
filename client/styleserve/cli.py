"""The ``styleserve`` command: stylise pictures, register styles, follow detachable jobs
(``styleserve jobs``) and describe a server.

Every ``StyleOptions`` field has a flag, built from the field itself (its type, closed choices
and help text live in ``styleserve.options``), so an option added there is on the command line
at once and the defaults ``--help`` shows are the ones the server applies. Flags left off take
the chosen preset's values, except the backbone and the delivery defaults (preview size, output
quality), which the server decides.
Failures end in one line naming the gRPC status and the request id; exit codes: 0 done,
1 failed, 2 bad usage, 130 Ctrl-C (which cancels the job on the server).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import typing
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import shtab
from PIL import Image, ImageOps

from styleserve import __version__
from styleserve.batch import Failure, Outcome
from styleserve.calls import final_result
from styleserve.channel import check_timeout
from styleserve.client import Client
from styleserve.contact_sheet import contact_sheet
from styleserve.errors import InvalidArgument, StyleserveError, VideoError
from styleserve.events import Preview, Result, Started
from styleserve.folders import FolderError, Planned, plan
from styleserve.info import ServerInfo
from styleserve.jobs import JobStatus
from styleserve.options import (
    DEFAULT_PORT,
    PRESETS,
    OptionsError,
    StyleOptions,
)
from styleserve.pictures import FORMAT_SUFFIXES, SUFFIX_FORMATS, encode_picture, write_atomically
from styleserve.plan import total_iterations
from styleserve.progress import FramesBar, PicturesBar, ProgressBar
from styleserve.regions import Regions, parse_color
from styleserve.request import check_options
from styleserve.video import INSTALL_HINT, VideoClip, VideoWriter, open_video
from styleserve.video_jobs import DEFAULT_OVERLAP, StylizedFrame, VideoProgress, VideoResult

__all__ = ["build_parser", "main", "subcommands"]

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
# Exit status of a process ended by SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
# What Ctrl-C did beyond stopping the command, by command ("stylize DIR": a folder run): a job
# run by the command is cancelled with its call; a watched detachable job runs on.
_INTERRUPTED = {
    "stylize": "; the job was cancelled",
    "stylize DIR": "; the jobs in flight were cancelled (the pictures written stay; run the"
    " command again to do the rest)",
    "video": "; the clip's calls were cancelled",
    "jobs watch": "; the job runs on (styleserve jobs cancel ID stops it)",
}
# argparse's own status for bad usage, which the client's refusals of options share.
EXIT_USAGE = 2
# Previews requested with --previews but no --preview-every: about this many per job.
_PREVIEWS_PER_JOB = 10
CONTACT_SHEET = "contact_sheet.png"
# Containers `styleserve video` writes (each has a muxer in every FFmpeg build).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 1,0.5; got {text!r}"
        ) from None


def _count(text: str) -> int:
    """A whole number of at least 1 (jobs, frames per chunk)."""
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _whole(text: str) -> int:
    """A whole number of at least 0 (frames shared, a sequence number)."""
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _seconds(text: str) -> float:
    """A deadline in seconds, checked as the client checks one."""
    seconds = float(text)
    try:
        check_timeout(seconds)
    except OptionsError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return seconds


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _color(text: str) -> int:
    try:
        return parse_color(text)
    except OptionsError as err:
        raise argparse.ArgumentTypeError(err.message) from None


# How a field's type reads from the command line: its converter and placeholder.
_TYPES: dict[Any, tuple[Callable[[str], Any], str]] = {
    int: (int, "N"),
    int | None: (int, "N"),
    float: (float, "X"),
    str: (str, "NAME"),
    tuple[str, ...]: (_names, "A,B,..."),
    tuple[float, ...]: (_numbers, "X,Y,..."),
}


def _preset_values(name: str) -> str:
    """Each preset's value of option ``name``, for the help text."""

    def shown(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    values = ", ".join(f"{preset}: {shown(getattr(o, name))}" for preset, o in PRESETS.items())
    return f"(preset's; {values})"


def option_flags() -> dict[str, str]:
    """Option field name -> its flag, for every StyleOptions field."""
    return {
        f.name: "--" + (f.metadata["flag"] or f.name.replace("_", "-"))
        for f in dataclasses.fields(StyleOptions)
    }


def _add_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every StyleOptions field, from the field's type, choices and help."""
    group = parser.add_argument_group("job options (left out: the preset's value)")
    hints = typing.get_type_hints(StyleOptions)
    flags = option_flags()
    for f in dataclasses.fields(StyleOptions):
        help_text = f"{f.metadata['help']} {_preset_values(f.name)}"
        if hints[f.name] is bool:
            group.add_argument(
                flags[f.name], dest=f.name, action=argparse.BooleanOptionalAction, help=help_text
            )
            continue
        convert, metavar = _TYPES[hints[f.name]]
        choices = f.metadata["choices"] or None
        group.add_argument(
            flags[f.name],
            dest=f.name,
            type=convert,
            choices=choices,
            metavar=None if choices else metavar,
            help=help_text,
        )


def _add_regions(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "regions (each style paints its own part; pictures of the content's aspect ratio)"
    )
    # (flag, its type, placeholder, repeated once per style picture, help)
    flags: tuple[tuple[str, Callable[[str], Any], str, bool, str], ...] = (
        ("--style-mask", Path, "FILE", True, "grey mask of a style picture's region (white)"),
        ("--keep-mask", Path, "FILE", False, "with --style-mask: a region to keep as it is"),
        ("--label-map", Path, "FILE", False, "colour-coded regions (a lossless picture)"),
        ("--style-color", _color, "RRGGBB", True, "with --label-map: a style picture's colour"),
        ("--keep-color", _color, "RRGGBB", False, "with --label-map: a region to keep as it is"),
    )
    for flag, kind, metavar, each, text in flags:
        dest = flag.removeprefix("--").replace("-", "_") + ("s" if each else "")
        group.add_argument(
            flag,
            dest=dest,
            type=kind,
            action="append" if each else "store",
            metavar=metavar,
            help=f"{text}, once per style picture in their order" if each else text,
        )


def _regions(args: argparse.Namespace) -> Regions | None:
    """The regions the command line names; None when it names none."""
    given = Regions(
        style_masks=tuple(args.style_masks or ()),
        label_map=args.label_map,
        style_colors=tuple(args.style_colors or ()),
        keep_color=args.keep_color,
        keep_mask=args.keep_mask,
    )
    return None if given == Regions() else given


def _add_connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=os.environ.get("STYLESERVE_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help="server address, or dns:///name:port to spread calls over every address of name "
        "(default: $STYLESERVE_SERVER or %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("STYLESERVE_TOKEN"),
        help="bearer token (default: $STYLESERVE_TOKEN)",
    )
    group.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="deadline of the call")
    group.add_argument(
        "--tls", action="store_true", help="connect over TLS (the system's root certificates)"
    )
    group.add_argument(
        "--ca-cert", type=Path, metavar="FILE", help="PEM CA that signed the server (implies --tls)"
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        metavar="FILE",
        help="PEM client certificate for mutual TLS (implies --tls; with --client-key)",
    )
    group.add_argument("--client-key", type=Path, metavar="FILE", help="PEM key of --client-cert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleserve", description="Neural style transfer on a styleserve server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Each command's own parser, so that a usage error shows that command's usage.
    parser.set_defaults(parser=parser)
    commands = parser.add_subparsers(dest="command", required=True)

    stylize = commands.add_parser(
        "stylize",
        help="paint a content picture in the style of one or more style pictures",
        description="Options left out take the preset's values.",
    )
    stylize.set_defaults(parser=stylize, run=_stylize)
    stylize.add_argument(
        "content", type=Path, help="content picture (PNG, JPEG or WebP), or with -o DIR/ a folder"
    )
    stylize.add_argument(
        "styles",
        type=Path,
        nargs="*",
        metavar="style",
        help="style picture(s), or --style-id; with -o DIR/ every positional but the last is a"
        " content (a picture or a folder of them) and the last is the style, unless --style or"
        " --style-id names the styles",
    )
    stylize.add_argument(
        "-o",
        "--output",
        # A string: a trailing slash is what asks for a folder, and Path drops it.
        type=str,
        required=True,
        help="result file: .png, .jpg or .webp; or a folder (a trailing slash or an existing"
        " folder) that gets one result per content, named after it, those already there skipped",
    )
    stylize.add_argument(
        "--style",
        dest="style_files",
        type=Path,
        action="append",
        metavar="FILE",
        help="a style picture, repeated to blend several (beside or instead of positional ones)",
    )
    stylize.add_argument(
        "-j",
        "--jobs",
        type=_count,
        metavar="N",
        help="with -o DIR/: jobs in flight at once (default: the job's tier's slots times the"
        " replicas behind --server)",
    )
    stylize.add_argument(
        "--style-id", metavar="ID", help="a style registered with 'styleserve register-style'"
    )
    stylize.add_argument(
        "--init-image", type=Path, metavar="FILE", help="start from this picture (init image)"
    )
    stylize.add_argument("--previews", type=Path, metavar="DIR", help="save previews here")
    stylize.add_argument(
        "--detachable",
        action="store_true",
        help="the job outlives this command: a dropped connection is reattached, and after"
        " Ctrl-C it runs on, if watched within the server's detach grace (60 s by default):"
        " 'styleserve jobs watch ID -o FILE' gets its result",
    )
    _add_regions(stylize)
    stylize.add_argument(
        "--json", action="store_true", help="print one JSON object describing the result"
    )
    stylize.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_options(stylize)
    _add_connection(stylize)

    register = commands.add_parser(
        "register-style",
        help="prepare style pictures once on the server; prints the style id for --style-id",
        description="The style options given here (backbone, style layers, style scale, "
        "resize, size, ...) apply to every job that names the id.",
    )
    register.set_defaults(parser=register, run=_register_style)
    register.add_argument("styles", type=Path, nargs="+", metavar="style", help="style picture(s)")
    _add_options(register)
    _add_connection(register)

    video = commands.add_parser(
        "video",
        help="stylise a clip, each frame consistent with the last; rate, rotation and audio kept",
        description="Options left out take the preset's values. The clip is sent in chunks, "
        f"at once to every slot behind --server. Needs PyAV: {INSTALL_HINT}.",
    )
    video.set_defaults(parser=video, run=_video)
    video.add_argument("input", type=Path, help="the clip (any container and codec FFmpeg reads)")
    video.add_argument(
        "styles", type=Path, nargs="*", metavar="style", help="style picture(s), or --style-id"
    )
    video.add_argument(
        "-o", "--output", type=Path, required=True, help="result clip: " + ", ".join(VIDEO_SUFFIXES)
    )
    video.add_argument(
        "--style-id", metavar="ID", help="a style registered with 'styleserve register-style'"
    )
    video.add_argument(
        "--overlap",
        type=_whole,
        default=DEFAULT_OVERLAP,
        metavar="N",
        help="frames consecutive chunks share, cross-faded at the join (default: %(default)s)",
    )
    video.add_argument(
        "--chunk-frames",
        type=_count,
        metavar="N",
        help="most frames per chunk (default: the server's)",
    )
    video.add_argument(
        "-j",
        "--jobs",
        type=_count,
        metavar="N",
        help="chunks in flight at once (default: the job's tier's slots times the replicas"
        " behind --server)",
    )
    video.add_argument("--json", action="store_true", help="print one JSON object describing it")
    video.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_options(video)
    _add_connection(video)

    _add_jobs(commands)

    info = commands.add_parser("info", help="describe the server")
    info.set_defaults(parser=info, run=_info)
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_connection(info)

    health = commands.add_parser(
        "health", help="the server's grpc.health.v1 status (exit 0 when SERVING)"
    )
    health.set_defaults(parser=health, run=_health)
    health.add_argument(
        "--service", default="", help="service to ask about (default: the whole server)"
    )
    _add_connection(health)
    _add_completion(commands)
    return parser


def _add_jobs(commands: Any) -> None:
    """``styleserve jobs ...``: the detachable jobs of this caller that a server keeps."""
    jobs = commands.add_parser(
        "jobs",
        help="list, look up, follow or cancel the detachable jobs the server keeps for you",
        description="Jobs started with detachable set; each is bound to its caller's token or "
        "client certificate, and kept on the replica that runs it.",
    )
    actions = jobs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every job the server keeps for you, oldest first")
    listing.set_defaults(parser=listing, run=_jobs_list)
    get = actions.add_parser("get", help="how a job is doing (running, or how it ended)")
    get.set_defaults(parser=get, run=_jobs_get)
    watch = actions.add_parser(
        "watch", help="follow a job to its end (reattaching on a break) and write its result"
    )
    watch.set_defaults(parser=watch, run=_jobs_watch)
    cancel = actions.add_parser("cancel", help="stop a running job (its slot frees at once)")
    cancel.set_defaults(parser=cancel, run=_jobs_cancel)
    for action in (get, watch, cancel):
        action.add_argument("job_id", metavar="ID", help="the job's id (Started.job_id)")
    watch.add_argument(
        "--after",
        type=_whole,
        default=0,
        metavar="N",
        help="resume after the N-th event (its sequence number; default: replay all)",
    )
    watch.add_argument(
        "--replica",
        default="",
        metavar="HOST:PORT",
        help="the replica that runs the job (Started.replica), tried before --server",
    )
    watch.add_argument(
        "-o", "--output", type=Path, help="write the result here: .png, .jpg or .webp"
    )
    watch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for action in (listing, get, watch, cancel):
        action.add_argument("--json", action="store_true", help="print JSON")
        _add_connection(action)


_COMPLETION_SETUP = """\
The script completes the commands, their options and the options' choices, and file names
where a command takes a file. Install it once:

  bash  source <(styleserve completion bash)  in ~/.bashrc, or save the script as
        ~/.local/share/bash-completion/completions/styleserve
  zsh   styleserve completion zsh > ~/.zfunc/_styleserve, with fpath=(~/.zfunc $fpath)
        before compinit in ~/.zshrc
  tcsh  styleserve completion tcsh > ~/.styleserve.tcsh, and source ~/.styleserve.tcsh
        in ~/.tcshrc

Regenerate it after upgrading styleserve: new options come with new releases."""
# The shells the help above explains (shtab makes the scripts for each).
_COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def _add_completion(commands: Any) -> None:
    """``styleserve completion SHELL``: shtab's script for SHELL, derived from this parser."""
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script for styleserve (bash, zsh or tcsh)",
        description=_COMPLETION_SETUP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.set_defaults(run=_completion)  # it describes the whole command: the top parser
    completion.add_argument("shell", choices=_COMPLETION_SHELLS, help="the shell to complete")


def _completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _complete_files(parser)
    print(shtab.complete(parser, shell=args.shell), end="")
    return 0


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name, in the order it declares them: what the shell
    completions, the docs' CLI reference and their tests walk (argparse has no public way)."""
    return {
        name: subparser
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, subparser in action.choices.items()
    }


def _complete_files(parser: argparse.ArgumentParser) -> None:
    """Marks every argument that names a file or folder (a Path, and stylize's -o, a string
    for its trailing slash) for shtab's file completion, in every subcommand."""
    for action in parser._actions:
        if action.type is Path or action.dest == "output":
            # shtab's documented way to choose an argument's completion.
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    for subparser in subcommands(parser).values():
        _complete_files(subparser)


def _connect(args: argparse.Namespace) -> Client:
    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    tls = args.tls or args.ca_cert is not None or args.client_cert is not None
    return Client(
        args.server,
        tls=tls,
        ca_cert=read(args.ca_cert),
        client_cert=read(args.client_cert),
        client_key=read(args.client_key),
        token=args.token,
        timeout=args.timeout,
    )


def _set_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (the rest stay unset)."""
    given = {name: getattr(args, name) for name in option_flags()}
    given = {name: value for name, value in given.items() if value is not None}
    if "size" in given and "width" not in given and "height" not in given:
        # A preset's fixed width x height would take precedence over --size.
        given.update(width=0, height=0)
    return given


def _content_size(path: Path) -> tuple[int, int]:
    """The content's upright size, for the preview cadence (the server checks the file)."""
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).size
    except (OSError, ValueError):
        return (1, 1)


def _require_output_folder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Exits with a usage error unless the folder ``-o`` writes into exists and may be written
    (checked before any job runs, rather than when its result has nowhere to go)."""
    if not args.output.parent.is_dir():
        parser.error(f"-o: the folder {str(args.output.parent)!r} does not exist; create it first")
    written = args.output if args.output.is_dir() else args.output.parent
    if not os.access(written, os.W_OK | os.X_OK):
        parser.error(f"-o: cannot write into the folder {str(written)!r} (permission denied)")


def _require_styles(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Exits with a usage error unless the job names its style: pictures or --style-id."""
    if not args.styles and not args.style_id:
        parser.error("give style pictures, or --style-id")


def _output_format(output: Path, parser: argparse.ArgumentParser) -> str:
    """The picture format ``-o`` names by its suffix; a usage error for any other suffix."""
    output_format = SUFFIX_FORMATS.get(output.suffix.lower())
    if output_format is None:
        parser.error(f"-o: name a .png, .jpg or .webp file, got {str(output)!r}")
    return output_format


def _resolved(
    args: argparse.Namespace,
    styles: Sequence[Path],
    options: dict[str, Any],
    parser: argparse.ArgumentParser,
    *,
    init_image: bool = False,
    video: bool = False,
) -> StyleOptions:
    """``options`` resolved as the client sends them, and checked against the pictures sent
    with them (``styles``, or ``--style-id``; a starting picture or not) and, for a ``video``,
    against what a video may not ask: a usage error naming the bad one."""
    try:
        return check_options(
            styles, style_id=args.style_id, init_image=init_image, options=options, video=video
        )
    except InvalidArgument as err:
        parser.error(err.details)


def _job_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    output_format = _output_format(args.output, parser)
    if args.output_format is not None and args.output_format != output_format:
        parser.error(f"--output-format {args.output_format} does not match -o {args.output.name}")
    _require_output_folder(args, parser)
    _require_styles(args, parser)
    if args.preview_every is not None and args.previews is None:
        parser.error("--preview-every needs --previews DIR to save the previews in")
    options = {**_set_options(args), "output_format": output_format}
    # Refused before any call, as bad usage.
    resolved = _resolved(args, args.styles, options, parser, init_image=args.init_image is not None)
    if args.previews is not None and args.preview_every is None:
        # The server's own plan of the job, so that previews come at the promised cadence.
        total = total_iterations(_content_size(args.content), resolved)
        options["preview_every"] = max(1, total // _PREVIEWS_PER_JOB)
    return options


def _stylize(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.output:
        # Path("") is the current folder: an unset variable would write there unasked.
        parser.error("-o: give the output file (or a folder), got an empty name")
    named_folder = args.output.endswith(("/", os.sep)) or Path(args.output).is_dir()
    args.output = Path(args.output)
    if named_folder:
        args.folder = True  # what Ctrl-C says of it (``_interrupted``)
        return _stylize_folder(args, parser)
    if args.jobs is not None:
        parser.error("-j: runs several pictures at once; name a folder with -o DIR/")
    args.job_id = None
    args.styles = [*args.styles, *(args.style_files or ())]
    options = _job_options(args, parser)
    previews: list[Preview] = []
    results: list[Result] = []
    with (
        _connect(args) as client,
        ProgressBar(disable=True if args.quiet else None) as bar,
    ):
        events = client.stream(
            args.content,
            args.styles or None,
            style_id=args.style_id,
            init_image=args.init_image,
            regions=_regions(args),
            request_id=args.request_id,
            detachable=args.detachable,
            **options,
        )
        for event in events:
            bar.show(event)
            if isinstance(event, Started):
                # A detachable job's: what Ctrl-C names as running on (``main``).
                args.job_id = event.job_id or None
            elif isinstance(event, Preview):
                # Made with the first preview: a refused job leaves no empty folder behind.
                args.previews.mkdir(parents=True, exist_ok=True)
                event.save(args.previews / f"preview_{event.iteration:05d}{args.output.suffix}")
                previews.append(event)
            elif isinstance(event, Result):
                # Ended: nothing runs on past a Ctrl-C from here.
                args.job_id = None
                event.save(args.output)
                results.append(event)
    result = final_result(results)
    if previews:
        sheet = contact_sheet([(f"#{p.iteration}", p.image()) for p in previews])
        write_atomically(args.previews / CONTACT_SHEET, encode_picture(sheet))
    if args.json:
        print(json.dumps(_describe_result(result, args.output), indent=2))
    else:
        print(f"wrote {args.output} ({result.width}x{result.height}, {_made_by(result)})")
    return 0


def _folder_job(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[Planned], list[Path], dict[str, Any]]:
    """A folder run's pictures and outputs, its style pictures and its job options."""
    positionals = [args.content, *args.styles]
    if args.style_files or args.style_id:
        contents, styles = positionals, list(args.style_files or ())
    elif len(positionals) < 2:
        parser.error("give the content pictures, then the style picture (or --style/--style-id)")
    else:
        contents, styles = positionals[:-1], positionals[-1:]
    if args.previews is not None or args.preview_every is not None:
        parser.error("--previews takes one picture; leave it out when -o names a folder")
    if args.detachable:
        parser.error("--detachable takes one picture; leave it out when -o names a folder")
    _require_output_folder(args, parser)
    options = {**_set_options(args), "output_format": args.output_format or "png"}
    # Checked once before any job, rather than refused once per picture.
    for style in styles:
        if not Path(style).is_file():
            parser.error(f"the style picture {str(style)!r} is not a file")
    init_image = args.init_image is not None
    _resolved(args, styles, options, parser, init_image=init_image)
    try:
        planned = plan(contents, args.output, options["output_format"])
    except FolderError as err:
        parser.error(str(err))
    if not planned:
        parser.error("no content pictures (.png, .jpg, .webp) among the pictures and folders given")
    return planned, styles, options


def _stylize_folder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Every content into the folder ``-o`` names, as many at once as the servers take; a
    picture that fails is reported and the others go on."""
    planned, styles, options = _folder_job(args, parser)
    args.output.mkdir(exist_ok=True)
    todo = [p for p in planned if not p.done]
    summary: dict[str, list[dict[str, Any]]] = {
        "written": [],
        "skipped": [
            {"content": str(p.content), "output": str(p.output)} for p in planned if p.done
        ],
        "failed": [],
    }
    # A rerun with nothing left to do needs no server.
    if todo:
        with (
            _connect(args) as client,
            PicturesBar(len(todo), disable=True if args.quiet else None) as bar,
            contextlib.closing(
                client.stylize_many(
                    [p.content for p in todo],
                    styles or None,
                    style_id=args.style_id,
                    init_image=args.init_image,
                    regions=_regions(args),
                    concurrency=args.jobs,
                    **options,
                )
            ) as outcomes,
        ):
            for outcome in outcomes:
                done = todo[outcome.index]
                error = _saved(outcome, done.output)
                if error is not None:
                    line = _failure_line(error, outcome.request_id, subject=done.content)
                    bar.finished(line, failed=True)
                    summary["failed"].append(_describe_failure(error, outcome.request_id, done))
                    continue
                assert outcome.result is not None
                result = outcome.result
                described = _describe_result(result, done.output)
                summary["written"].append({"content": str(done.content), **described})
                # With --json, stdout is the summary alone.
                bar.finished(
                    None
                    if args.json
                    else f"wrote {done.output} ({result.width}x{result.height}, {_made_by(result)})"
                )
    counts = {name: len(entries) for name, entries in summary.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{counts['written']} written, {counts['skipped']} already there (skipped),"
            f" {counts['failed']} failed, in {args.output}"
        )
    return 1 if summary["failed"] else 0


def _saved(outcome: Outcome, output: Path) -> Failure | None:
    """Writes the picture's result to ``output``; what failed it, if anything did."""
    if outcome.result is None:
        return outcome.error
    try:
        outcome.result.save(output)
    except OSError as err:
        return err
    return None


def _describe_failure(err: Failure, request_id: str, planned: Planned) -> dict[str, Any]:
    """A --json entry for a picture that failed: the gRPC status and the server's message,
    or the local error (a file that cannot be read or written) with no status."""
    if isinstance(err, StyleserveError):
        code, details, request_id = err.code.name, err.details, err.request_id or request_id
    else:
        code, details = None, str(err)
    return {
        "content": str(planned.content),
        "output": str(planned.output),
        "code": code,
        "error": details,
        "request_id": request_id,
    }


def _describe_result(result: Result, output: Path) -> dict[str, Any]:
    """The --json object: where the picture went and how it was made."""
    return {"output": str(output), **_made_how(result)}


def _made_how(result: Result) -> dict[str, Any]:
    """How a result was made, for --json."""
    return {
        "width": result.width,
        "height": result.height,
        "iterations": result.iterations,
        "partial": result.partial,
        "stop_reason": result.stop_reason,
        "sha256": result.sha256,
        "timings": dataclasses.asdict(result.timings),
        "losses": dataclasses.asdict(result.losses),
        "receipt": dataclasses.asdict(result.receipt),
        "options": result.options.to_dict(),
    }


def _made_by(result: Result) -> str:
    """How the result was made, for the closing line."""
    receipt, seconds = result.receipt, result.timings.total_seconds
    if receipt.feed_forward is not None and not receipt.backbone:
        # The instant tier's picture: asked for, or standing in for an optimisation that had
        # no time for an iteration.
        networks = receipt.feed_forward
        made = f"feed-forward in {seconds:.2f} s, {networks.name} on {networks.execution_provider}"
        if result.options.method == "feed_forward":
            return made
        return f"{made}: no iteration fitted before the {result.stop_reason}, so it stands in"
    partial = f", stopped early ({result.stop_reason})" if result.partial else ""
    return (
        f"{result.iterations} iterations in {seconds:.1f} s{partial}, loss"
        f" {result.losses.total:.4g}, seed {receipt.seed}, {receipt.backbone} on {receipt.device}"
    )


def _video(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.output.suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"-o: name a {', '.join(VIDEO_SUFFIXES)} file, got {str(args.output)!r}")
    _require_output_folder(args, parser)
    _require_styles(args, parser)
    options = _set_options(args)
    # Refused before any call, as bad usage.
    _resolved(args, args.styles, options, parser, video=True)
    try:
        clip = open_video(args.input)
    except ModuleNotFoundError as err:
        if err.name != "av":
            raise
        print(f"styleserve: {err}", file=sys.stderr)
        return 1
    except VideoError as err:  # the clip, checked here before any call: bad usage
        parser.error(err.details)
    result: VideoResult | None = None
    with (
        _connect(args) as client,
        FramesBar(clip.info.frame_count, disable=True if args.quiet else None) as bar,
        VideoWriter(args.output, clip.info) as writer,
    ):
        try:
            writer.check()
            for event in client.stylize_video(
                clip,
                args.styles or None,
                style_id=args.style_id,
                overlap=args.overlap,
                chunk_frames=args.chunk_frames,
                concurrency=args.jobs,
                request_id=args.request_id,
                **options,
            ):
                if isinstance(event, VideoProgress):
                    bar.show(event)
                elif isinstance(event, StylizedFrame):
                    writer.write(event.image())
                elif isinstance(event, VideoResult):
                    result = event
        except VideoError as err:
            # What the client finds before any call (the output's container and the audio,
            # the clip against the server's limits): bad usage, as the clip's own checks.
            parser.error(err.details)
    assert result is not None  # stylize_video ends with it or raises
    if args.json:
        print(json.dumps(_describe_video(result, clip, writer), indent=2))
    else:
        info = clip.info
        print(
            f"wrote {args.output} ({result.frames} frames of {result.width}x{result.height} at"
            f" {float(info.fps):g} fps, {len(result.chunks)} chunks,"
            f" {'audio copied' if info.audio_codec else 'no audio'})"
        )
    return 0


def _describe_video(result: VideoResult, clip: VideoClip, writer: VideoWriter) -> dict[str, Any]:
    """The --json object of ``styleserve video``: the clip written and how its chunks ran."""
    info = clip.info
    return {
        "output": str(writer.path),
        "frames": result.frames,
        "width": result.width,
        "height": result.height,
        "fps": float(info.fps),
        "rotation": info.rotation,
        "duration_seconds": info.duration_seconds,
        "audio_codec": info.audio_codec,
        "encoder": writer.encoder,
        "chunks": [
            {
                "index": c.chunk.index,
                "start": c.chunk.start,
                "stop": c.chunk.stop,
                "timings": dataclasses.asdict(c.timings),
                "receipt": dataclasses.asdict(c.receipt),
            }
            for c in result.chunks
        ],
        "options": result.chunks[0].options.to_dict(),
    }


def _register_style(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        print(client.register_style(args.styles, **_set_options(args)))
    return 0


def _mib(size: int) -> str:
    return f"{round(size / 2**20, 1):g} MiB"


def _describe(info: ServerInfo, target: str) -> str:
    limits = info.limits
    lines = [
        f"server     {target}",
        f"version    {info.version} (torch {info.torch_version})",
        f"device     {info.device}",
        f"backbones  {', '.join(info.backbones)}",
        f"capacity   {limits.job_slots} running, {limits.queue_size} queued,"
        f" {limits.memory_budget_bytes / 2**30:.1f} GiB of memory for jobs",
        f"limits     output side {limits.min_output_side}-{limits.max_output_side} px,"
        f" <= {limits.max_iterations} iterations, <= {limits.max_styles} styles, pictures"
        f" <= {_mib(limits.max_image_bytes)} and {limits.max_input_pixels / 1e6:g} Mpx",
    ]
    if info.feed_forward is not None:
        networks = info.feed_forward
        lines.append(
            f"instant    {networks.name} on {networks.execution_provider},"
            f" {limits.feed_forward_slots} running, {limits.feed_forward_queue_size} queued"
        )
    if info.precision_choice is not None:
        choice = info.precision_choice
        timed = ", ".join(t.precision for t in choice.trials)
        lines.append(f"precision  {timed}; auto is {choice.reason}")
    if info.style_cache is not None and info.style_cache.max_bytes:
        cache = info.style_cache
        lines.append(
            f"styles     {cache.entries} registered, {_mib(cache.used_bytes)} of"
            f" {_mib(cache.max_bytes)} cached"
        )
    if info.uploads is not None and info.uploads.max_bytes:
        uploads = info.uploads
        lines.append(
            f"uploads    pictures <= {_mib(uploads.max_upload_bytes)}, {_mib(uploads.used_bytes)}"
            f" of {_mib(uploads.max_bytes)} held, kept {uploads.expire_seconds} s after use"
        )
    elif info.uploads is not None:
        lines.append("uploads    off: pictures must fit a request")
    for name, o in info.presets.items():
        size = f"{o.width}x{o.height}" if o.width and o.height else f"{o.size} px"
        if o.method == "feed_forward":
            lines.append(
                f"preset     {name}: {size}, feed-forward, style strength {o.style_strength:g}"
            )
            continue
        lines.append(
            f"preset     {name}: {size}, {o.iterations} x {o.optimizer}, {o.backbone},"
            f" init {o.init}, style strength {o.style_strength:g}, {o.loss_normalization}"
            f" weights {o.content_weight:g}/{o.style_weight:g}/{o.tv_weight:g}"
        )
    return "\n".join(lines)


def _info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        info = client.info()
    print(json.dumps(info.to_dict(), indent=2) if args.json else _describe(info, args.server))
    return 0


def _health(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _describe_job(job: JobStatus) -> dict[str, Any]:
    """A job's --json object: its state, newest progress and result (or error)."""
    result = job.result
    return {
        "job_id": job.job_id,
        "state": job.state,
        "progress": None if job.progress is None else dataclasses.asdict(job.progress),
        "result": None if result is None else _made_how(result),
        "error": None
        if job.error is None
        else {"code": job.error.code.name, "message": job.error.details},
    }


def _job_line(job: JobStatus) -> str:
    """A job in one line: its id, state and how far it got."""
    line = f"{job.job_id}  {job.state}"
    if job.progress is not None:
        line += f"  {job.progress.iteration}/{job.progress.total_iterations} iterations"
    if job.result is not None:
        line += f"  {job.result.width}x{job.result.height}, sha256 {job.result.sha256[:12]}"
    if job.error is not None:
        line += f"  {job.error.code.name}: {job.error.details}"
    return line


def _jobs_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        jobs = client.list_jobs()
    if args.json:
        print(json.dumps([_describe_job(job) for job in jobs], indent=2))
    else:
        print("\n".join(_job_line(job) for job in jobs) if jobs else "no jobs kept for you")
    return 0


def _jobs_get(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        job = client.get_job(args.job_id)
    print(json.dumps(_describe_job(job), indent=2) if args.json else _job_line(job))
    return 0


def _jobs_watch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.output is not None:
        _output_format(args.output, parser)
        _require_output_folder(args, parser)
    results: list[Result] = []
    with (
        _connect(args) as client,
        ProgressBar(disable=True if args.quiet else None) as bar,
    ):
        for event in client.watch_job(args.job_id, args.after, replica=args.replica):
            bar.show(event)
            if isinstance(event, Result):
                if args.output is not None:
                    _save_as_named(event, args.output)
                results.append(event)
    if not results and args.after:
        # The job ended, and its Result was numbered --after or before: nothing is missing.
        said = f"nothing after event {args.after}; watch without --after for all"
        print(
            json.dumps({"job_id": args.job_id, "result": None, "note": said}, indent=2)
            if args.json
            else f"{args.job_id}: {said}"
        )
        return 0
    result = final_result(results)
    if args.json:
        described = _describe_result(result, args.output) if args.output else _made_how(result)
        print(json.dumps({"job_id": args.job_id, "result": described}, indent=2))
    elif args.output is not None:
        print(f"wrote {args.output} ({result.width}x{result.height}, {_made_by(result)})")
    else:
        print(f"{args.job_id} done ({result.width}x{result.height}, {_made_by(result)})")
    return 0


def _save_as_named(result: Result, output: Path) -> None:
    """Writes ``result`` to ``output`` when its suffix names the result's format (a watched
    job's format is known only once it ends); raises OSError saying which suffix to use."""
    made = result.options.output_format
    if SUFFIX_FORMATS[output.suffix.lower()] != made:
        raise OSError(
            f"-o: the job made a {made.upper()} picture; name a {FORMAT_SUFFIXES[made]} file "
            "(the result stays kept: watch the job again)"
        )
    result.save(output)


def _jobs_cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _connect(args) as client:
        client.cancel_job(args.job_id)
        job = client.get_job(args.job_id)
    print(json.dumps(_describe_job(job), indent=2) if args.json else _job_line(job))
    return 0


def _failure_line(err: Failure, request_id: str | None, *, subject: Path | None = None) -> str:
    """The line a failure ends in; ``subject`` names the picture of a folder run it is about."""
    prefix = f"styleserve: {subject}: " if subject is not None else "styleserve: "
    if not isinstance(err, StyleserveError):
        return f"{prefix}{err}"
    line = f"{prefix}{err.code.name}: {err.details}"
    request_id = err.request_id or request_id
    return f"{line} (request id {request_id})" if request_id else line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Sent with the job, so that even a failure no server answered names the id to look for.
    args.request_id = uuid.uuid4().hex if args.command in ("stylize", "video") else None
    try:
        return int(args.run(args, args.parser))
    except StyleserveError as err:
        print(_failure_line(err, args.request_id), file=sys.stderr)
        return 1
    except OptionsError as err:  # what the client refuses before any call: bad usage
        print(f"styleserve {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"styleserve: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"styleserve: interrupted{_interrupted(command, args)}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _interrupted(command: str, args: argparse.Namespace) -> str:
    """What Ctrl-C did beyond stopping ``command``."""
    if command == "stylize" and getattr(args, "folder", False):
        return _INTERRUPTED["stylize DIR"]
    if command != "stylize" or getattr(args, "job_id", None) is None:
        # A detachable job still queued goes with its call, as any other does.
        return _INTERRUPTED.get(command, "")
    return (
        f"; job {args.job_id} runs on, and is cancelled unless watched within the server's detach"
        f" grace (60 s by default): 'styleserve jobs watch {args.job_id} -o FILE' gets its"
        f" result, 'styleserve jobs cancel {args.job_id}' stops it"
    )


if __name__ == "__main__":
    sys.exit(main())
