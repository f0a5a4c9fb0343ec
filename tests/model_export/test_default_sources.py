"""``styleserve-export`` with no ``--source`` exports what a server with default settings loads,
so the two commands a newcomer sees in the help give a server that starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from styleserve_export.cli import DEFAULT_SOURCES, main
from styleserve_export.loader import artifact_dir, load_backbone, load_feed_forward
from styleserve_server.settings import Settings


def test_the_default_sources_are_what_a_default_server_loads():
    fields = Settings.model_fields
    assert DEFAULT_SOURCES == (fields["backbone"].default, fields["feed_forward"].default)


@pytest.mark.vgg
def test_no_source_exports_both_artifacts(vgg16_cache, feed_forward_cache, tmp_path: Path, capsys):
    # Both artifacts already exported (the session's fixtures): the command finds each valid
    # and says so, one line per source, and a server's loader then finds both in one cache.
    for name, cache in zip(DEFAULT_SOURCES, (vgg16_cache, feed_forward_cache), strict=True):
        shutil.copytree(artifact_dir(cache, name), artifact_dir(tmp_path, name))
    assert main(["--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(
        name in line for name, line in zip(DEFAULT_SOURCES, lines, strict=True)
    )
    assert load_backbone(DEFAULT_SOURCES[0], cache_dir=tmp_path, device="cpu").name == "keras-vgg16"
    assert load_feed_forward(DEFAULT_SOURCES[1], cache_dir=tmp_path).name == "magenta-arbitrary"
