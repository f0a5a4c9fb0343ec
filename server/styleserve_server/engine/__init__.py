"""The style-transfer engine, no gRPC: ``run_job`` turns pictures into records (torch), and
``FeedForward`` is the instant tier's one pass (onnxruntime); ``run_video`` runs either per
frame of a clip, keeping the frames consistent; styles prepared once for many jobs
and the precision measured at start-up complete its face.

The service runs ``run_job`` in a worker thread and translates each record it yields; what the
service uses of the engine is what this package exports.
"""

from styleserve_server.engine.feed_forward import INSTANT_TILE_PIXELS, FeedForward
from styleserve_server.engine.imaging import shrink
from styleserve_server.engine.job import run_job
from styleserve_server.engine.memory import (
    TEMPORAL_BYTES,
    predicted_peak_bytes,
    registration_peak_bytes,
    return_freed_memory,
)
from styleserve_server.engine.precision import (
    PrecisionChoice,
    PrecisionTrial,
    auto_precision,
    expected_evaluation_seconds,
    expected_job_seconds,
    job_precision,
    measure_precision,
)
from styleserve_server.engine.prepared import Grams, PreparedStyle, StyleKey
from styleserve_server.engine.records import (
    Finished,
    FrameDone,
    Iterate,
    JobCancelled,
    Losses,
    StopAt,
    VideoDone,
)
from styleserve_server.engine.style import prepare as prepare_style
from styleserve_server.engine.style import registration_stages, targets_nbytes
from styleserve_server.engine.video import run_video

__all__ = [
    "INSTANT_TILE_PIXELS",
    "TEMPORAL_BYTES",
    "FeedForward",
    "Finished",
    "FrameDone",
    "Grams",
    "Iterate",
    "JobCancelled",
    "Losses",
    "PrecisionChoice",
    "PrecisionTrial",
    "PreparedStyle",
    "StopAt",
    "StyleKey",
    "VideoDone",
    "auto_precision",
    "expected_evaluation_seconds",
    "expected_job_seconds",
    "job_precision",
    "measure_precision",
    "predicted_peak_bytes",
    "prepare_style",
    "registration_peak_bytes",
    "registration_stages",
    "return_freed_memory",
    "run_job",
    "run_video",
    "shrink",
    "targets_nbytes",
]
