"""How much sooner the default mode's strategy reaches the tutorial's result than the tutorial.

Both strategies minimise the SAME objective, the ``seed`` preset's (the Keras example's layers,
weights, preprocessing and 300x500 size), on tubingen.jpg + starry_night.jpg, in one process:

1. the seed strategy: noise start, L-BFGS rounds of 20 evaluations, float32; its final loss
   after ``--rounds`` rounds is L30 (for the default 30 rounds);
2. the default mode's strategy (content start, coarse-to-fine, its optimiser and precision)
   on that objective, timed until its full-resolution loss first falls below L30.

It also times single loss+gradient evaluations to report the achieved GFLOP/s, and saves
``seed.png`` (1's result), ``fast.png`` (2's picture when it crossed L30) and ``default.png``
(the default preset with its own objective, stopped after as long as 2 took) into ``--out``.
The last line is ``speedup=<time of 1 / time of 2>``. The full run takes 10-20 minutes on
two cores; ``--rounds 3`` is a quick check.

    python benchmarks/seed_vs_default.py --out /tmp/bench [--rounds 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from styleserve.options import PRESETS, StyleOptions, resolve
from styleserve_export.loader import Backbone, load_backbone
from styleserve_export.vgg import VGGFeatures
from styleserve_server.engine import Finished, Iterate, run_job
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import resize, to_tensor
from styleserve_server.engine.objective import Objective, Weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
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
)


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


def seed_objective(backbone: Backbone, precision: str, content, style) -> Objective:
    net = FeatureNet(backbone, precision)
    return Objective(net, Weights.from_options(PRESETS["seed"]), content, [style], ())


def seconds_per_evaluation(objective: Objective, content) -> float:
    """Best of a few loss+gradient evaluations of ``objective``."""
    x = content.clone().requires_grad_(True)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss, _ = objective(x)
        torch.autograd.grad(loss, x)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def default_on_seed_objective() -> StyleOptions:
    seed = PRESETS["seed"]
    return resolve("default", **{name: getattr(seed, name) for name in OBJECTIVE_FIELDS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark-out"), help="where PNGs go")
    parser.add_argument("--rounds", type=int, default=30, help="seed L-BFGS rounds (30: L30)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone("keras-vgg16")
    content = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB")
    style = Image.open(EXAMPLES / "starry_night.jpg").convert("RGB")
    seed_options = resolve("seed", iterations=args.rounds, seed=0)
    print(f"device {backbone.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    size = (seed_options.width, seed_options.height)
    content_px = to_tensor(resize(content, size, seed_options.resize), backbone.device)
    style_px = to_tensor(resize(style, size, seed_options.resize), backbone.device)
    for precision in ("float32", "bfloat16"):
        objective = seed_objective(backbone, precision, content_px, style_px)
        per_eval = seconds_per_evaluation(objective, content_px)
        rate = GFLOP_PER_EVALUATION / per_eval
        print(f"loss+gradient at 300x500, {precision}: {per_eval:.3f} s = {rate:.0f} GFLOP/s")

    # (1) The seed strategy.
    counter = EvaluationCounter()
    for step in timed(run_job(backbone, content, [style], seed_options)):
        if isinstance(step.record, Iterate):
            print(
                f"seed round {step.record.iteration - 1}: loss {step.record.losses.total:.4g}"
                f" at {step.seconds:.1f} s"
            )
        else:
            seed_seconds, seed_result = step.seconds, step.record
    counter.close()
    target = seed_result.losses.total
    seed_result.image.save(args.out / "seed.png")
    print(
        f"seed strategy: {args.rounds} rounds, {counter.count} evaluations in {seed_seconds:.1f} s"
        f" ({seed_seconds / counter.count:.3f} s/eval), final loss L{args.rounds} = {target:.4g}"
    )

    # (2) The default strategy on the same objective, until it beats the seed's final loss.
    fast_options = default_on_seed_objective().replace(preview_every=1, preview_size=max(size))
    fast_seconds = None
    for step in timed(run_job(backbone, content, [style], fast_options)):
        record = step.record
        if not isinstance(record, Iterate):
            break
        full = (record.width, record.height) == size
        if record.iteration % 10 == 0 or full and record.losses.total < target:
            print(
                f"default strategy: stage {record.stage} {record.width}x{record.height}"
                f" iteration {record.iteration}: loss {record.losses.total:.4g}"
                f" at {step.seconds:.1f} s"
            )
        if full and record.losses.total < target:
            fast_seconds = step.seconds
            assert record.preview is not None
            record.preview.save(args.out / "fast.png")
            break
    if fast_seconds is None:
        print(
            f"default strategy: never below L{args.rounds} in {fast_options.iterations} "
            "full-size iterations"
        )
        print("speedup=0")
        return 1
    print(f"default strategy ({record.losses}) below L{args.rounds} after {fast_seconds:.1f} s")
    # The crossing was judged in the job's own precision; the saved 8-bit pictures, in float32:
    check = seed_objective(backbone, "float32", content_px, style_px)
    with torch.no_grad():
        for name in ("seed.png", "fast.png"):
            picture = to_tensor(Image.open(args.out / name), backbone.device)
            print(f"float32 seed-objective loss of {name}: {check(picture)[0].item():.4g}")

    # The default preset's own picture after the same time.
    own = resolve("default", width=size[0], height=size[1], preview_every=1, preview_size=max(size))
    picture = None
    for step in timed(run_job(backbone, content, [style], own)):
        if isinstance(step.record, Iterate) and step.record.preview is not None:
            picture = step.record.preview
        if step.seconds >= fast_seconds:
            break
    assert picture is not None
    picture.save(args.out / "default.png")

    print(f"speedup={seed_seconds / fast_seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
