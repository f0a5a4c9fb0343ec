"""Optimisers over the picture, one ``iteration`` at a time, and the evaluation cache under them.

torch's L-BFGS evaluates the loss at the start of every ``step`` call, usually at the point its
last line search already evaluated, and the job asks for the losses of each iterate to report
them: ``Evaluator`` remembers the last point, so neither costs a second pass of the network.

L-BFGS comes in two forms, both with torch's strong-Wolfe line search. With ``evals`` > 1 an
iteration is a *round* in the sense of the Keras example: a fresh L-BFGS (its history reset, as
each call of scipy's ``fmin_l_bfgs_b`` resets it), stopped after ``evals`` evaluations. With
``evals`` == 1 one L-BFGS runs through the whole stage and an iteration is one of its steps:
usually one evaluation, a few when the line search must shorten the step (without a line search
a bad unit step multiplies the loss by 1e15 in one go). Either way the very first step is scaled
to move the steepest pixel by ``first_step`` (0-255 units): torch's default first step,
``1/|g|_1``, barely moves pixels whose gradients are large.

A picture big enough that torch's L-BFGS state would pass a budget (``_STATE_BYTES``: above
about 5 MP) gets a compact L-BFGS instead (``_CompactLBFGS``), its history in bfloat16 and its
line search keeping one gradient, so that a print-size job's memory is mostly the network's
working memory of one tile (``engine.tiles``) rather than whole-picture vectors. On the tiny
network at 96, 128 and 160 px, 30 iterations ended 9%, 3% and 1.5% above torch's L-BFGS with 3
pairs against 50, and 11%, 7% and 3% with 2.

A ``Box`` keeps the picture inside what the output can encode, so that the delivered 8-bit
picture scores what the last iterate did (unbounded, the seed objective's iterates drift far
outside 0-255 and clipping them costs 20%). The box projects: every evaluation sees the picture
clamped into it (its gradient passed straight through), every step ends on the clamped picture,
and L-BFGS is told the step it actually took, so that its curvature pairs stay true. Measured on
the seed objective with the default strategy (benchmarks/README.md), this reaches the seed's
delivered loss in as few evaluations as a projection that also drops the gradient of pixels
held at a bound, and in fewer than a sigmoid reparametrisation (which flattens the loss near
the bounds) or a projection that leaves L-BFGS's step as it planned it (its line searches fail).
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
from collections.abc import Callable

import torch
from styleserve.options import OptionsError
from torch import Tensor

from styleserve_server.engine.box import Box
from styleserve_server.engine.records import stop_if_cancelled

__all__ = ["Evaluator", "Optimizer", "state_bytes"]

# Rounds keep scipy's L-BFGS-B default memory, which the Keras example relies on. A continuous
# run converges faster with more (on the seed objective at 300x500, evaluations to reach the
# seed's final loss: 103 with 10 pairs, 89 with 30, 84 with 50), within a memory budget per job.
_ROUND_HISTORY = 10
_MAX_HISTORY = 50
_MIN_HISTORY = 5
_HISTORY_BYTES = 256 * 2**20
# Evaluations one continuous L-BFGS step may spend, its line search included (the unit step is
# usually accepted at once; a failed one is shortened instead of blowing the picture up).
_STEP_EVALS = 6
# torch's L-BFGS holds, besides its history, up to seven float32 pictures through a step's
# evaluations (its gradient, the previous one, the direction, the line search's start and its
# three gradients). Where they and the least history pass this budget (pictures above about
# 5.3 MP in RGB), the compact L-BFGS (``_CompactLBFGS``) takes over, its history as long as the
# same budget allows beside what its step holds (its first gradient and direction in bfloat16,
# and the float32 gradient its line search brings), but never shorter than one pair: 2 pairs
# and more up to about 20 MP, 1 beyond, so that its state stays within the budget up to 24 MP
# and grows by 8 bytes per pixel beyond. On the tiny network at 96, 128 and 160 px, after the
# 10 iterations a climbing stage runs, 1 pair ended 1.9%, 0.3% and 11.5% above torch's L-BFGS
# with 50 and 2 pairs 1.7%, 0.8% and 9.4%; after 30, 15.3%, 7.1% and 9.9% against 7.5%, 12.5%
# and 3.9%.
_TORCH_PICTURES = 7
_STATE_BYTES = 2**30
_LEAST_COMPACT_HISTORY = 1
# The sufficient decrease a compact step must reach (Armijo's c1, as torch's line search).
_ARMIJO = 1e-4
# Elements per product when dotting whole pictures: their float32 copies stay small.
_CHUNK = 1 << 22


class Evaluator:
    """Loss and gradient of ``objective`` at ``x`` (clamped into ``box``, if any), with the
    last point cached.

    ``objective(v, box)`` gets the variable itself (its storage, no copy: at print sizes a copy
    is a whole picture beside the optimiser's state) and clamps what it reads of it into
    ``box`` with the gradient passed straight through (``Box.straight``, a window at a time
    when it works in tiles). Sets ``x.grad``; raises JobCancelled when ``cancel`` is set, so
    that a cancel lands within one evaluation even inside a long L-BFGS round.
    """

    def __init__(
        self,
        objective: Callable[[Tensor, Box | None], tuple[Tensor, Tensor]],
        box: Box | None = None,
    ) -> None:
        self._objective = objective
        self._box = box
        self._x: Tensor | None = None
        self._cancel: threading.Event | None = None
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # (point, gradient, loss)
        self.terms: Tensor | None = None

    def bind(self, x: Tensor, cancel: threading.Event | None) -> None:
        """Evaluate at ``x`` from now on, polling ``cancel``."""
        self._x, self._cancel = x, cancel

    def _point(self, x: Tensor) -> Tensor:
        """The picture ``x`` stands for: a copy that the steps leave be."""
        return x.detach().clone() if self._box is None else self._box.bounded(x)

    def __call__(self) -> Tensor:
        x = self._x
        assert x is not None, "bind() the variable first"
        # Points that clamp to the same picture have the same loss and (straight-through)
        # gradient: the projection that ends a step costs no evaluation.
        if self._last is not None and torch.equal(self._last[0], self._point(x)):
            _, x.grad, last_loss = self._last
            return last_loss
        stop_if_cancelled(self._cancel)
        # The last point and its gradient go before the next evaluation, so that a big
        # picture's evaluation holds one of each.
        self._last, x.grad = None, None
        variable = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, terms = self._objective(variable, self._box)
            (grad,) = torch.autograd.grad(loss, variable)
        if not bool(torch.isfinite(loss)):
            # The options' weights and powers are bounded to keep the arithmetic finite; what
            # still overflows is the request's doing, and the caller's to change.
            raise OptionsError(
                "options",
                "the loss overflowed (inf or NaN) with these options: lower content_weight, "
                "style_weight, tv_weight or tv_power",
            )
        # Copied now that the evaluation's working memory is free again.
        self._last = (self._point(x), grad, loss.detach())
        self.terms = terms.detach()
        # Shared with the cache: the optimisers read gradients and never write them.
        x.grad = grad
        return self._last[2]


class Optimizer:
    """``kind`` ("lbfgs" or "adam") advancing ``x`` by one iteration per ``iteration()`` call.

    ``evals`` is the evaluations of an iteration (1: one step; for L-BFGS, see the module's
    docstring); ``first_step`` is L-BFGS's first step or Adam's step, in pixel units; ``box``,
    when given, holds ``x`` after every step (give the evaluator the same one).
    """

    def __init__(
        self,
        kind: str,
        x: Tensor,
        evaluator: Evaluator,
        evals: int,
        first_step: float,
        box: Box | None = None,
    ) -> None:
        self._kind = kind
        self._box = box
        self._x = x
        self._evaluate = evaluator
        self._evals = evals
        self._first_step = first_step
        # One of the three, by ``kind`` and the picture's size.
        self._adam_opt: torch.optim.Adam | None = None
        self._lbfgs_opt: torch.optim.LBFGS | None = None
        self._compact: _CompactLBFGS | None = None

    @property
    def monotone(self) -> bool:
        """Whether no iteration raises the loss: L-BFGS's line searches accept a step only
        where the loss falls (torch's strong-Wolfe search ends on the lowest point it found,
        the compact one undoes a step it cannot accept), and a step ends on the point its
        search evaluated (the box's projection of it); Adam's steps may overshoot."""
        return self._kind == "lbfgs"

    def iteration(self) -> None:
        if self._kind == "adam":
            self._adam()
        elif self._evals > 1:
            self._lbfgs_round()
        else:
            self._lbfgs_step()

    def _adam(self) -> None:
        if self._adam_opt is None:
            self._adam_opt = torch.optim.Adam([self._x], lr=self._first_step)
        for _ in range(self._evals):
            self._adam_opt.step(self._evaluate)
            if self._box is not None:
                self._box.project_(self._x)

    def _lbfgs_round(self) -> None:
        # A round's inner steps cannot be projected one by one; its evaluations see the
        # clamped picture all the same, and the next round starts afresh.
        opt = self._fresh_lbfgs(self._evals, _ROUND_HISTORY)
        used = opt.state[self._x]["func_evals"]
        if used < self._evals:
            opt.param_groups[0].update(max_iter=self._evals, max_eval=self._evals - used)
            self._step(opt)

    def _lbfgs_step(self) -> None:
        if _compact(x_elements := self._x.numel()):
            if self._compact is None:
                history = _compact_history(x_elements)
                self._compact = _CompactLBFGS(self._x, self._evaluate, history, self._box)
            if not self._compact.step(self._first_step):
                # As below: start over from the gradient.
                self._compact.reset()
                self._compact.step(self._first_step)
            return
        if self._lbfgs_opt is None:
            self._lbfgs_opt = self._fresh_lbfgs(_STEP_EVALS, self._history())
            return
        if not self._step(self._lbfgs_opt):
            # The line search found nothing lower along the history's direction (rounding
            # noise in the curvature pairs): start over from the gradient.
            self._lbfgs_opt = self._fresh_lbfgs(_STEP_EVALS, self._history())

    def _step(self, opt: torch.optim.LBFGS) -> bool:
        """One ``opt.step``, projected into the box; whether its last step moved the picture.

        torch's step ends on its start plus ``t * d`` and takes that as the step of its next
        curvature pair: the projection's correction goes into ``d``, so that the pair is the
        step taken, without keeping the start (a whole picture) through the step."""
        opt.step(self._evaluate)
        state = opt.state[self._x]
        t, d = state.get("t"), state.get("d")
        if self._box is not None:
            with torch.no_grad():
                x = self._x.detach()
                correction = self._box.bounded(x).sub_(x)
                x.add_(correction)
                if t and d is not None:
                    d.add_(correction.flatten(), alpha=1.0 / t)
        return bool(t) and d is not None and bool(d.any())

    def _history(self) -> int:
        return _torch_history(self._x.numel())

    def _fresh_lbfgs(self, max_eval: int, history: int) -> torch.optim.LBFGS:
        """A new L-BFGS that has taken its first, scaled step."""
        opt = torch.optim.LBFGS(
            [self._x],
            lr=1.0,
            max_iter=1,
            max_eval=max_eval,
            tolerance_grad=0.0,
            history_size=history,
            line_search_fn="strong_wolfe",
        )
        # torch's first step is t = lr * min(1, 1/|g|_1) along -g; choose lr to move the
        # steepest pixel by first_step, then restore the unit step of later iterations.
        self._evaluate()
        grad = self._x.grad
        assert grad is not None, "the evaluation sets the gradient"
        magnitude = grad.abs()
        peak, l1 = torch.stack((magnitude.max(), magnitude.sum())).tolist()
        if peak > 0:
            opt.param_groups[0]["lr"] = self._first_step / peak / min(1.0, 1.0 / l1)
        self._step(opt)
        opt.param_groups[0]["lr"] = 1.0
        return opt


def _dot(a: Tensor, b: Tensor) -> float:
    """The dot product of two flat pictures of any float types, by chunks (float64 sum)."""
    return math.fsum(
        float(torch.dot(p.float(), q.float()))
        for p, q in zip(a.split(_CHUNK), b.split(_CHUNK), strict=True)
    )


class _CompactLBFGS:
    """L-BFGS for a picture too big for torch's state: its curvature pairs, its direction and
    the step's first gradient in bfloat16 (torch's are float32), and a backtracking line search
    that keeps only that gradient (torch's strong-Wolfe search keeps its start and up to three
    gradients). At 12 MP with 5 pairs it holds 0.86 GB through an evaluation where torch's
    L-BFGS would hold 2.45 GB. The line search asks for sufficient decrease only (Armijo,
    shortened by quadratic interpolation) where torch's asks for the strong Wolfe conditions
    too; a pair whose curvature is not positive is left out, as L-BFGS-B leaves it. Steps end
    in the box as ``Optimizer._step`` ends torch's, the pair being the step taken."""

    def __init__(self, x: Tensor, evaluate: Evaluator, history: int, box: Box | None) -> None:
        self._x = x
        self._evaluate = evaluate
        self._box = box
        self._pairs: collections.deque[tuple[Tensor, Tensor, float]] = collections.deque(
            maxlen=history
        )

    def reset(self) -> None:
        self._pairs.clear()

    def _direction(self, gradient: Tensor) -> Tensor:
        """The two-loop recursion's descent direction from the history, in bfloat16."""
        q = gradient.neg()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            alphas.append(rho * _dot(s, q))
            q.add_(y, alpha=-alphas[-1])
        if self._pairs:
            s, y, _ = self._pairs[-1]
            q.mul_(_dot(s, y) / _dot(y, y))
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            q.add_(s, alpha=alpha - rho * _dot(y, q))
        return q.to(torch.bfloat16)

    def step(self, first_step: float) -> bool:
        """One step: the unit step along the history's direction (without a history, along
        the gradient, the steepest pixel moved by ``first_step``), shortened until the loss
        falls enough; whether it moved the picture."""
        x = self._x.detach().view(-1)
        loss = float(self._evaluate())
        assert self._x.grad is not None, "the evaluation sets the gradient"
        gradient = self._x.grad.flatten()
        direction = self._direction(gradient)
        slope = _dot(gradient, direction)
        if not slope < 0 and self._pairs:
            # Rounding noise in the pairs turned the direction uphill: start over.
            self._pairs.clear()
            direction = self._direction(gradient)
            slope = _dot(gradient, direction)
        if not slope < 0:
            return False
        # Through the line search the first gradient is kept in bfloat16, as the pairs are: in
        # float32 it would be a whole picture more beside the search's evaluations.
        first = gradient.to(torch.bfloat16)
        del gradient
        t = 1.0 if self._pairs else first_step / float(direction.abs().max())
        x.add_(direction, alpha=t)
        for _ in range(_STEP_EVALS):
            tried = float(self._evaluate())
            if tried <= loss + _ARMIJO * t * slope:
                break
            # The least of the parabola through the start's loss and slope and this loss.
            shorter = -slope * t * t / (2.0 * (tried - loss - slope * t))
            shorter = min(max(shorter, 0.1 * t), 0.5 * t)
            x.add_(direction, alpha=shorter - t)
            t = shorter
        else:
            x.add_(direction, alpha=-t)
            return False
        assert self._x.grad is not None
        # The pair (the step taken, ending in the box, and the gradient's change) by chunks:
        # float32 copies of whole pictures are what a print-size step would otherwise hold.
        step, change = torch.empty_like(direction), torch.empty_like(first)
        boxes = itertools.repeat(None) if self._box is None else self._box.parts(_CHUNK)
        parts = zip(
            *(v.split(_CHUNK) for v in (x, direction, step, self._x.grad.view(-1), first, change)),
            strict=True,
        )
        for (at, d, s, reached, g, y), box in zip(parts, boxes, strict=False):
            taken = d.float().mul_(t)
            if box is not None:
                moved = box.bounded(at)
                taken.add_(moved).sub_(at)
                at.copy_(moved)
            s.copy_(taken)
            y.copy_(reached - g)
        pair = (step, change)
        curvature = _dot(*pair)
        if curvature > 1e-10:
            self._pairs.append((*pair, 1.0 / curvature))
        return True


def _torch_history(elements: int) -> int:
    """torch's L-BFGS's curvature pairs (two float32 pictures each) within the budget."""
    return max(_MIN_HISTORY, min(_MAX_HISTORY, _HISTORY_BYTES // (8 * elements)))


def _compact(elements: int) -> bool:
    """Whether a continuous L-BFGS over a picture of ``elements`` float32 values is compact."""
    return (_TORCH_PICTURES + 2 * _MIN_HISTORY) * 4 * elements > _STATE_BYTES


def _compact_history(elements: int) -> int:
    """The compact L-BFGS's pairs (bfloat16) within the budget, beside its first gradient and
    direction (bfloat16) and the gradient its line search brings (float32)."""
    pairs = (_STATE_BYTES - 8 * elements) // (4 * elements)
    return max(_LEAST_COMPACT_HISTORY, min(_MAX_HISTORY, pairs))


def state_bytes(kind: str, evals: int, elements: int) -> int:
    """The most the optimiser ``Optimizer(kind, x, _, evals, ...)`` holds, beside the picture
    and its gradient, through an evaluation over a picture ``x`` of ``elements`` float32
    values (3 per pixel, 1 with ``preserve_color``): Adam's two moments, torch's L-BFGS's
    pictures and history, or the compact L-BFGS's. A continuous L-BFGS's history shortens as
    the picture grows, a pair at a time within its budget, so what it holds drops at each
    step: counted here as the budget it fills (a pair more at most), so that a job's predicted
    peak grows with its size, which admission's search for the largest size that fits needs."""
    if kind == "adam":
        return 8 * elements
    if evals > 1:
        return (_TORCH_PICTURES + 2 * _ROUND_HISTORY) * 4 * elements
    if _compact(elements):
        return max(_STATE_BYTES, 8 * elements)
    history = min(
        2 * _MAX_HISTORY * 4 * elements, max(_HISTORY_BYTES, 2 * _MIN_HISTORY * 4 * elements)
    )
    return _TORCH_PICTURES * 4 * elements + history
