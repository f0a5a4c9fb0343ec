"""mkdocs hooks: the docs' reference tables are generated from the code at build time.

Pasted tables of settings, flags and fields drift from what they describe. A page holds a
marker, ``<!-- generated: NAME -->``, and :func:`on_page_markdown` puts in its place the
Markdown that ``GENERATORS[NAME]`` makes from the code itself: the server's ``Settings`` and
metrics registry, the CLI's ``argparse`` parser, the .proto. A new setting, flag, metric or
field thus needs no hand-written row. A marker naming no generator, or a generator whose
marker no page holds, fails the build. ``mkdocs.yml`` names this file under ``hooks:``;
``tests/test_docs.py`` calls the generators.
"""

from __future__ import annotations

import argparse
import re
import runpy
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import annotated_types
from mkdocs.exceptions import PluginError
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr
from styleserve.cli import build_parser
from styleserve_server.metrics import Metrics
from styleserve_server.settings import Settings

__all__ = ["GENERATORS", "cli_reference", "metrics_table", "protocol_reference", "settings_table"]

MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
_SCRIPTS = Path(__file__).resolve().parent


def _cell(text: str) -> str:
    """``text`` fit for one cell of a Markdown table."""
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def settings_table() -> str:
    """One row per field of ``styleserve_server.settings.Settings``: flag, variable, default."""
    prefix = Settings.model_config.get("env_prefix", "")
    lines = [
        "| flag | environment | default | range | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        flags = f"`{flag}`"
        if field.annotation is bool:  # cli_implicit_flags: a switch and its negation
            flags += f" / `--no-{flag[2:]}`"
        default = _default(field.get_default(call_default_factory=True))
        meaning = _cell(field.description or "")
        bounds = _range(field.metadata) or _choices(field.annotation)
        lines.append(f"| {flags} | `{prefix}{name.upper()}` | {default} | {bounds} | {meaning} |")
    return "\n".join(lines) + "\n"


def _choices(annotation: Any) -> str:
    """A Literal setting's values."""
    if typing.get_origin(annotation) is not typing.Literal:
        return ""
    return ", ".join(f"`{value}`" for value in typing.get_args(annotation))


def _range(metadata: list[object]) -> str:
    """A setting's bounds (its Field's ge, gt, le, lt), as the server checks them at start-up."""
    low = next((f">= {m.ge:_}" for m in metadata if isinstance(m, annotated_types.Ge)), "")
    low = low or next((f"> {m.gt:_}" for m in metadata if isinstance(m, annotated_types.Gt)), "")
    high = next((f"<= {m.le:_}" for m in metadata if isinstance(m, annotated_types.Le)), "")
    high = high or next((f"< {m.lt:_}" for m in metadata if isinstance(m, annotated_types.Lt)), "")
    return ", ".join(bound for bound in (low, high) if bound).replace("_", " ")


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """(name, one-line help) of each subcommand of ``parser``, in the order it declares them."""
    for action in parser._actions:  # argparse has no public way to walk a parser
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield choice.dest, choice.help or ""


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    if action.nargs == 0:
        return ", ".join(f"`{option}`" for option in action.option_strings)
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return ", ".join(f"`{option} {metavar}`" for option in action.option_strings)


def _command(parser: argparse.ArgumentParser, help: str, level: int) -> Iterator[str]:
    yield f"{'#' * level} `{parser.prog}`"
    yield ""
    if help:
        yield _cell(help)
        yield ""
    if parser.description and issubclass(
        parser.formatter_class, argparse.RawDescriptionHelpFormatter
    ):  # laid out by hand, as --help prints it
        yield f"```text\n{parser.description}\n```"
        yield ""
    elif parser.description:
        yield _cell(parser.description)
        yield ""
    formatter = parser._get_formatter()
    subparsers = dict(_subcommands(parser))
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if action.help != argparse.SUPPRESS
            and not isinstance(action, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        yield f"**{group.title}**"
        yield ""
        yield "| argument | meaning |"
        yield "| --- | --- |"
        for action in actions:
            meaning = formatter._expand_help(action) if action.help else ""
            if action.choices is not None:
                meaning += f" (one of: {', '.join(map(str, action.choices))})"
            yield f"| {_argument(action)} | {_cell(meaning)} |"
        yield ""
    if subparsers:
        yield "| command | what it does |"
        yield "| --- | --- |"
        for name, text in subparsers.items():
            yield f"| `{parser.prog} {name}` | {_cell(text)} |"
        yield ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command(sub, subparsers[name], level + 1)


def cli_reference() -> str:
    """Every command of ``styleserve`` (subcommands too), each with its arguments and help."""
    return "\n".join(_command(build_parser(), "", 2)) + "\n"


def metrics_table() -> str:
    """Every metric a server exports on ``--metrics-port``, from its own registry."""
    metrics = Metrics()
    # prometheus_client keeps a metric's label names private; its families carry none.
    labels = {
        metric._name: metric._labelnames
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    suffix = {"counter": "_total", "info": "_info"}
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for family in metrics.registry.collect():
        name = family.name + suffix.get(family.type, "")
        names = ", ".join(f"`{label}`" for label in labels.get(family.name, ()))
        meaning = _cell(family.documentation)
        lines.append(f"| `{name}` | {family.type} | {names} | {meaning} |")
    return "\n".join(lines) + "\n"


def protocol_reference() -> str:
    """The RPCs, messages, enums and stream events of ``styleserve.v1``, from the .proto."""
    reference: Callable[[], str] = runpy.run_path(str(_SCRIPTS / "proto_reference.py"))["reference"]
    return reference()


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "cli": cli_reference,
    "metrics": metrics_table,
    "protocol": protocol_reference,
}


def on_files(files: Any, config: Any) -> Any:
    """Fails the build, before any page is rendered, on a marker naming no generator or a
    generator that no page's marker names."""
    used: set[str] = set()
    for file in files.documentation_pages():
        for name in MARKER.findall(file.content_string):
            if name not in GENERATORS:
                known = ", ".join(sorted(GENERATORS))
                raise PluginError(f"{file.src_uri}: no generator {name!r} (known: {known})")
            used.add(name)
    missing = sorted(set(GENERATORS) - used)
    if missing:
        names = ", ".join(f"<!-- generated: {name} -->" for name in missing)
        raise PluginError(f"no page holds the marker of a generated reference: {names}")
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)
