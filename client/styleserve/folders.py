"""The files of a folder run (``styleserve stylize photos/*.jpg style.jpg -o out/``).

Which pictures a command line names (a folder stands for the pictures in it), the output each
one gets in the output folder (the content's name with the output format's suffix), and
which of those are there already: a rerun after an interruption or a failure sends only the
pictures still missing. Kept apart from the argument parsing so that the rules are one small
table and can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from styleserve.pictures import FORMAT_SUFFIXES, SUFFIX_FORMATS

__all__ = ["FolderError", "Planned", "pictures_in", "plan"]

_PICTURE_SUFFIXES = frozenset(SUFFIX_FORMATS)


class FolderError(ValueError):
    """The command line names pictures that cannot go to the output folder as asked."""


@dataclass(frozen=True)
class Planned:
    """One content picture and the output it is written to."""

    content: Path
    output: Path

    @property
    def done(self) -> bool:
        """Whether an earlier run wrote it: outputs appear whole (written to a temporary name
        and renamed), so one that exists is finished."""
        return self.output.exists()


def pictures_in(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with each folder replaced by its pictures (by suffix, hidden files such as
    unfinished outputs left out, in name order); files stay as given, for the server to
    judge."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in _PICTURE_SUFFIXES
                    and not p.name.startswith(".")
                    and p.is_file()
                )
            )
        else:
            found.append(path)
    return found


def plan(paths: Sequence[Path], folder: Path, output_format: str) -> list[Planned]:
    """Each content picture of ``paths`` and its output in ``folder``; raises FolderError when
    two contents would get the same output or ``folder`` is one of the content folders, or
    holds a content picture (its outputs would be the next run's contents, or replace them)."""
    if any(p.is_dir() and p.resolve() == folder.resolve() for p in paths):
        raise FolderError(f"-o {str(folder)!r} is a folder of content pictures; name another")
    suffix = FORMAT_SUFFIXES[output_format]
    planned: dict[Path, Planned] = {}
    target = folder.resolve()
    for content in pictures_in(paths):
        if content.resolve().parent == target:
            # Named one by one (a glob): an output would replace its content, or be taken for
            # "done" and skipped.
            raise FolderError(
                f"-o {str(folder)!r} holds the content picture {content.name!r}; name another"
            )
        output = folder / (content.stem + suffix)
        other = planned.setdefault(output, Planned(content, output)).content
        # The same picture named twice (a glob and a folder) is stylised once.
        if other != content:
            raise FolderError(
                f"{str(other)!r} and {str(content)!r} would both be written to"
                f" {str(output)!r}; rename one"
            )
    return list(planned.values())
