"""What GetServerInfo answers: the server's version, weights, presets, device, limits, delivery
defaults, instant tier, precision choice, style cache, upload store and job store, assembled in
one place from the settings and what the server has loaded (every limit travels:
tests/client/test_sdk_contract.py keeps ``pb.Limits`` equal to ``styleserve.options.Limits``
plus the capacity)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata

import torch
from styleserve.convert import delivery_to_proto, options_to_proto
from styleserve.options import PRESETS, Limits
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_export.artifact import Backbone

from styleserve_server import outputs
from styleserve_server.engine import FeedForward, PrecisionChoice
from styleserve_server.job_store import JobStoreInfo
from styleserve_server.settings import Settings
from styleserve_server.uploads import StoreInfo

__all__ = ["server_info", "version"]


@functools.cache
def version() -> str:
    # Reads the installed distribution's metadata from disk: once per process, not per call.
    return importlib.metadata.version("styleserve")


def server_info(
    settings: Settings,
    limits: Limits,
    backbone: Backbone,
    feed_forward: FeedForward | None,
    precision: PrecisionChoice | None,
    style_cache: tuple[int, int, int],
    uploads: StoreInfo,
    jobs: JobStoreInfo,
) -> pb.GetServerInfoResponse:
    """What GetServerInfo answers for a server serving ``backbone`` (on its device) with the
    instant tier ``feed_forward`` (None: none), "auto" measured as ``precision``, a style
    cache of (max bytes, used bytes, entries), the store of ``uploads`` and that of detachable
    ``jobs``."""
    max_bytes, used_bytes, entries = style_cache
    defaults = PRESETS["default"].replace(
        preview_size=settings.preview_size, output_quality=settings.output_quality
    )
    return pb.GetServerInfoResponse(
        version=version(),
        backbones=[backbone.name],
        presets=[
            pb.Preset(name=name, options=options_to_proto(preset.replace(backbone=backbone.name)))
            for name, preset in PRESETS.items()
        ],
        device=str(backbone.device),
        limits=pb.Limits(
            job_slots=settings.job_slots,
            queue_size=settings.queue_size,
            feed_forward_slots=settings.feed_forward_slots,
            feed_forward_queue_size=settings.feed_forward_queue_size,
            **dataclasses.asdict(limits),
        ),
        default_delivery=delivery_to_proto(defaults),
        torch_version=torch.__version__,
        feed_forward=None if feed_forward is None else outputs.feed_forward_info(feed_forward),
        precision_choice=None if precision is None else outputs.precision_choice(precision),
        style_cache=pb.StyleCacheInfo(max_bytes=max_bytes, used_bytes=used_bytes, entries=entries),
        uploads=pb.UploadStoreInfo(**dataclasses.asdict(uploads)),
        jobs=pb.JobStoreInfo(**dataclasses.asdict(jobs)),
    )
