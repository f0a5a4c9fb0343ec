"""Fixtures for the exported artifacts (owned by the export tests).

``vgg16_cache`` and ``feed_forward_cache`` export the real keras-vgg16 and magenta-arbitrary
artifacts once per test session, through the same function the ``styleserve-export`` command
uses; set STYLESERVE_TEST_CACHE_DIR to keep them between sessions (an export is skipped when
that directory already holds a valid artifact).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from styleserve_export.artifact import ArtifactError, Backbone
from styleserve_export.export import export
from styleserve_export.loader import load_backbone, read_feed_forward_manifest, read_manifest
from styleserve_export.sources import SOURCES


def _exported_cache(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    read: Callable[[str, Path], dict[str, Any]],
) -> Path:
    kept = os.environ.get("STYLESERVE_TEST_CACHE_DIR")
    if kept:
        try:
            read(name, Path(kept))
            return Path(kept)  # valid: reused as is, even from a read-only mount
        except ArtifactError:
            pass  # exported into it below, for the next session
    cache = Path(kept) if kept else tmp_path_factory.mktemp(f"{name}-cache")
    export(SOURCES[name], cache)
    return cache


@pytest.fixture(scope="session")
def vgg16_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the verified keras-vgg16 artifact."""
    return _exported_cache(tmp_path_factory, "keras-vgg16", read_manifest)


@pytest.fixture(scope="session")
def feed_forward_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the verified magenta-arbitrary feed-forward artifact."""
    return _exported_cache(tmp_path_factory, "magenta-arbitrary", read_feed_forward_manifest)


@pytest.fixture(scope="session")
def server_cache(
    vgg16_cache: Path, feed_forward_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One cache directory holding both artifacts, as ``styleserve-export`` leaves it for the
    server (``--cache-dir``)."""
    cache = tmp_path_factory.mktemp("server-cache")
    for source, name in ((vgg16_cache, "keras-vgg16"), (feed_forward_cache, "magenta-arbitrary")):
        (cache / name).symlink_to(source / name, target_is_directory=True)
    return cache


@pytest.fixture(scope="session")
def keras_vgg16(vgg16_cache: Path) -> Backbone:
    """The real ImageNet VGG16 (Keras weights, BGR input), frozen, on the CPU."""
    return load_backbone("keras-vgg16", cache_dir=vgg16_cache, device="cpu")
