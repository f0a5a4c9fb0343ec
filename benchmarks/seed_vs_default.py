"""How much sooner the default mode's strategy delivers the tutorial's result than the tutorial.

Both strategies minimise the SAME objective, the ``seed`` preset's (the Keras example's layers,
weights, preprocessing and 300x500 size), on tubingen.jpg + starry_night.jpg, in one process,
and both are judged on what a user gets: the delivered 8-bit picture, scored in float32.

1. the seed strategy: noise start, L-BFGS rounds of 20 evaluations, float32, unbounded; its
   delivered picture after ``--rounds`` rounds (clipped to 0-255 and rounded, as the example's
   ``deprocess_image``) scores the target T (for the default 30 rounds);
2. the default mode's strategy (content start, coarse-to-fine, its optimiser, bounds and
   ``precision="auto"`` choice) on that objective, timed until the 8-bit picture of a
   full-resolution iterate first scores below T.

It prints the CPU with the flags that bear on precision (read for the record only: the engine
decides by measuring), torch and oneDNN versions, threads, each strategy's precision and why,
single loss+gradient timings, and saves ``seed.png`` (1's result), ``fast.png`` (2's picture
when it crossed T), ``default.png`` (the default preset with its own objective, stopped after
as long as 2 took), ``seed.json`` (1's figures) and ``run.log`` (what it printed) into
``--out``. The last line is ``speedup=<time of 1 / time of 2>``. A full run takes 12-15 minutes
on two cores; ``--reuse-seed DIR`` takes 1's figures from an earlier run's ``seed.json`` and
``seed.png`` (for tuning 2; the published figure comes from a full run).

    python benchmarks/seed_vs_default.py --out docs/images/benchmark [--rounds 30]

Schedules tried on the way to the default preset are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from harness import CONTENT, STYLE, machine
from PIL import Image
from styleserve.options import PRESETS, StyleOptions, resolve
from styleserve_export.artifact import Backbone
from styleserve_export.loader import load_backbone
from styleserve_export.vgg import VGGFeatures
from styleserve_server.engine import Finished, Iterate, PrecisionChoice, run_job
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import resize, to_tensor
from styleserve_server.engine.objective import Objective, Weights
from styleserve_server.engine.precision import auto_precision
from torch import Tensor

# One VGG16 forward plus the input-gradient backward up to block5_conv1 at 300x500.
GFLOP_PER_EVALUATION = 171.0
# The objective's fields: what (2) takes from the seed preset; the rest is the default's.
OBJECTIVE_FIELDS = (
    "backbone",
    "width",
    "height",
    "size",
    "content_weight",
    "style_weight",
    "tv_weight",
    "tv_power",
    "content_layers",
    "style_layers",
    "style_layer_weights",
    "style_scale",
    "resize",
    "loss_normalization",
    "style_strength",
)
# (2)'s 8-bit picture is scored only once its own loss is this close to T: the 8-bit
# picture of a bounded iterate scores within 1% of it, and scoring costs a forward pass.
SCORE_MARGIN = 1.02

Log = Callable[[str], None]


class EvaluationCounter:
    """Counts loss+gradient evaluations: forward passes of a VGG with autograd on."""

    def __init__(self) -> None:
        self.count = 0
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, _args: object) -> None:
        if isinstance(module, VGGFeatures) and torch.is_grad_enabled():
            self.count += 1

    def close(self) -> None:
        self._handle.remove()


@dataclass
class Step:
    seconds: float
    record: Iterate | Finished


def timed(records: Iterator[Iterate | Finished]) -> Iterator[Step]:
    """The records with the seconds spent computing them so far (our own work excluded)."""
    spent = 0.0
    while True:
        start = time.perf_counter()
        try:
            record = next(records)
        except StopIteration:
            return
        spent += time.perf_counter() - start
        yield Step(spent, record)


@dataclass(frozen=True)
class SeedRun:
    """(1)'s figures, stored in ``seed.json`` for ``--reuse-seed``."""

    rounds: int
    seconds: float
    evaluations: int
    iterate_loss: float
    delivered_loss: float


@dataclass(frozen=True)
class Crossing:
    """(2)'s first full-size iterate whose 8-bit picture scores below T."""

    seconds: float
    evaluations: int
    iteration: int
    reported_loss: float
    delivered_loss: float
    picture: Image.Image


class Scorer:
    """The seed objective in float32, scoring 8-bit pictures."""

    def __init__(self, backbone: Backbone, content: Tensor, style: Tensor) -> None:
        self.objective = seed_objective(backbone, "float32", content, style)
        self._device = backbone.device

    def __call__(self, picture: Image.Image) -> float:
        with torch.no_grad():
            return self.objective(to_tensor(picture, self._device))[0].item()


def seed_objective(backbone: Backbone, precision: str, content: Tensor, style: Tensor) -> Objective:
    net = FeatureNet(backbone, precision)
    return Objective(net, Weights.from_options(PRESETS["seed"]), content, [style], ())


def seconds_per_evaluation(objective: Objective, content: Tensor) -> float:
    """Best of a few loss+gradient evaluations of ``objective``."""
    x = content.clone().requires_grad_(True)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss, _ = objective(x)
        torch.autograd.grad(loss, x)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def default_on_seed_objective(**overrides: object) -> StyleOptions:
    """The default preset with the seed preset's objective (and ``overrides``)."""
    seed = PRESETS["seed"]
    fields = {name: getattr(seed, name) for name in OBJECTIVE_FIELDS}
    return resolve("default", **{**fields, **overrides})


def run_seed(
    backbone: Backbone,
    content: Image.Image,
    style: Image.Image,
    rounds: int,
    score: Scorer,
    log: Log,
) -> tuple[SeedRun, Finished]:
    """(1): the seed preset, with its delivered picture scored in float32."""
    options = resolve("seed", iterations=rounds, seed=0)
    counter = EvaluationCounter()
    for step in timed(run_job(backbone, content, [style], options)):
        if isinstance(step.record, Iterate):
            log(
                f"seed round {step.record.iteration - 1}: loss {step.record.losses.total:.4g}"
                f" at {step.seconds:.1f} s"
            )
        else:
            seconds, finished = step.seconds, step.record
    counter.close()
    delivered = score(finished.image)
    return SeedRun(rounds, seconds, counter.count, finished.losses.total, delivered), finished


def run_default_strategy(
    backbone: Backbone,
    content: Image.Image,
    style: Image.Image,
    options: StyleOptions,
    choice: PrecisionChoice,
    target: float,
    score: Scorer,
    log: Log,
) -> Crossing | None:
    """(2): ``options`` until the 8-bit picture of a full-size iterate scores below
    ``target``; None when it never does."""
    size = (options.width, options.height)
    options = options.replace(preview_every=1, preview_size=max(size))
    counter = EvaluationCounter()
    try:
        for step in timed(run_job(backbone, content, [style], options, precision=choice)):
            record = step.record
            if not isinstance(record, Iterate):
                return None
            full = (record.width, record.height) == size
            reported = record.losses.total
            delivered = None
            if full and reported < target * SCORE_MARGIN:
                assert record.preview is not None
                delivered = score(record.preview)
            if record.iteration % 10 == 0 or delivered is not None:
                scored = "" if delivered is None else f", delivered {delivered:.4g}"
                log(
                    f"default strategy: stage {record.stage} {record.width}x{record.height}"
                    f" iteration {record.iteration}: loss {reported:.4g}{scored}"
                    f" at {step.seconds:.1f} s, {counter.count} evaluations"
                )
            if delivered is not None and delivered < target:
                assert record.preview is not None
                return Crossing(
                    step.seconds,
                    counter.count,
                    record.iteration,
                    reported,
                    delivered,
                    record.preview,
                )
    finally:
        counter.close()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark-out"), help="where it writes")
    parser.add_argument("--rounds", type=int, default=30, help="seed L-BFGS rounds (30: L30)")
    parser.add_argument(
        "--reuse-seed", type=Path, metavar="DIR", help="take (1) from DIR/seed.json, seed.png"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        return _benchmark(args, log)
    finally:
        (args.out / "run.log").write_text("".join(f"{line}\n" for line in lines))


def _benchmark(args: argparse.Namespace, log: Log) -> int:
    backbone = load_backbone("keras-vgg16")
    content = Image.open(CONTENT).convert("RGB")
    style = Image.open(STYLE).convert("RGB")
    log(f"device {backbone.device}, {machine()}")
    seed_options = PRESETS["seed"]
    size = (seed_options.width, seed_options.height)
    content_px = to_tensor(resize(content, size, seed_options.resize), backbone.device)
    style_px = to_tensor(resize(style, size, seed_options.resize), backbone.device)
    for precision in ("float32", "bfloat16"):
        objective = seed_objective(backbone, precision, content_px, style_px)
        per_eval = seconds_per_evaluation(objective, content_px)
        rate = GFLOP_PER_EVALUATION / per_eval
        log(f"loss+gradient at 300x500, {precision}: {per_eval:.3f} s = {rate:.0f} GFLOP/s")
    choice = auto_precision(backbone)
    score = Scorer(backbone, content_px, style_px)

    # (1) The seed strategy, or its stored figures.
    if args.reuse_seed is not None:
        seed = SeedRun(**json.loads((args.reuse_seed / "seed.json").read_text()))
        log(f"seed strategy: reused from {args.reuse_seed}")
    else:
        seed, finished = run_seed(backbone, content, style, args.rounds, score, log)
        log(f"seed strategy precision: {finished.precision} ({finished.precision_choice.reason})")
        finished.image.save(args.out / "seed.png")
        (args.out / "seed.json").write_text(json.dumps(asdict(seed), indent=2) + "\n")
    target = seed.delivered_loss
    log(
        f"seed strategy: {seed.rounds} rounds, {seed.evaluations} evaluations in"
        f" {seed.seconds:.1f} s ({seed.seconds / seed.evaluations:.3f} s/eval), loss of the"
        f" iterate L{seed.rounds} = {seed.iterate_loss:.4g}, of its 8-bit picture in float32"
        f" T = {target:.4g}"
    )

    # (2) The default strategy on the same objective, until its 8-bit picture beats T.
    log(f"default strategy precision: {choice.precision} ({choice.reason})")
    crossing = run_default_strategy(
        backbone, content, style, default_on_seed_objective(), choice, target, score, log
    )
    if crossing is None:
        log("default strategy: its 8-bit picture never scored below T")
        log("speedup=0")
        return 1
    crossing.picture.save(args.out / "fast.png")
    log(
        f"default strategy: 8-bit picture below T after {crossing.seconds:.1f} s"
        f" ({crossing.iteration} iterations, {crossing.evaluations} evaluations; loss"
        f" {crossing.reported_loss:.4g} as reported in {choice.precision},"
        f" {crossing.delivered_loss:.4g} delivered, in float32)"
    )

    # The default preset's own picture after the same time.
    own = resolve("default", width=size[0], height=size[1], preview_every=1, preview_size=max(size))
    picture = None
    for step in timed(run_job(backbone, content, [style], own, precision=choice)):
        if isinstance(step.record, Iterate) and step.record.preview is not None:
            picture = step.record.preview
        if step.seconds >= crossing.seconds:
            break
    assert picture is not None
    picture.save(args.out / "default.png")

    log(f"speedup={seed.seconds / crossing.seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
