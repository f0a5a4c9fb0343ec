"""Fixtures for the weight artifact (owned by the export tests).

``vgg16_cache`` exports the real keras-vgg16 artifact once per test session, through the same
function the ``styleserve-export`` command uses; set STYLESERVE_TEST_CACHE_DIR to keep it
between sessions (the export is skipped when that directory already holds a valid artifact).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from styleserve_export.export import export
from styleserve_export.loader import ArtifactError, Backbone, load_backbone, read_manifest
from styleserve_export.sources import SOURCES


@pytest.fixture(scope="session")
def vgg16_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the verified keras-vgg16 artifact."""
    kept = os.environ.get("STYLESERVE_TEST_CACHE_DIR")
    if kept:
        try:
            read_manifest("keras-vgg16", Path(kept))
            return Path(kept)  # valid: reused as is, even from a read-only mount
        except ArtifactError:
            pass  # exported into it below, for the next session
    cache = Path(kept) if kept else tmp_path_factory.mktemp("vgg16-cache")
    export(SOURCES["keras-vgg16"], cache)
    return cache


@pytest.fixture(scope="session")
def keras_vgg16(vgg16_cache: Path) -> Backbone:
    """The real ImageNet VGG16 (Keras weights, BGR input), frozen, on the CPU."""
    return load_backbone("keras-vgg16", cache_dir=vgg16_cache, device="cpu")
