"""The style-transfer engine: pure torch, no gRPC; ``run_job`` turns pictures into records.

The service runs ``run_job`` in a worker thread and translates each record it yields.
"""

from styleserve_server.engine.job import run_job
from styleserve_server.engine.precision import PrecisionChoice, PrecisionTrial, measure_precision
from styleserve_server.engine.records import Finished, Iterate, JobCancelled, Losses, StopAt

__all__ = [
    "Finished",
    "Iterate",
    "JobCancelled",
    "Losses",
    "PrecisionChoice",
    "PrecisionTrial",
    "StopAt",
    "measure_precision",
    "run_job",
]
