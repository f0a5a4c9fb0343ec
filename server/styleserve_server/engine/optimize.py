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

import threading
from collections.abc import Callable
from typing import Any

import torch
from styleserve.options import OptionsError
from torch import Tensor

from styleserve_server.engine.records import JobCancelled

__all__ = ["Box", "Evaluator", "Optimizer"]

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


class _ClampStraightThrough(torch.autograd.Function):
    """``x`` clamped into [lo, hi], with the gradient of the clamped picture passed to ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(x, lo), hi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


class Box:
    """Per-pixel bounds ``lo <= x <= hi`` of the optimised picture (tensors that broadcast)."""

    def __init__(self, lo: Tensor, hi: Tensor) -> None:
        self.lo, self.hi = lo, hi

    def clamp(self, x: Tensor) -> Tensor:
        """``x`` inside the box; differentiable, straight through."""
        return _ClampStraightThrough.apply(x, self.lo, self.hi)

    def project_(self, x: Tensor) -> None:
        """Moves ``x`` into the box, in place."""
        with torch.no_grad():
            torch.minimum(torch.maximum(x, self.lo), self.hi, out=x)


class Evaluator:
    """Loss and gradient of ``objective`` at ``x`` (clamped into ``box``, if any), with the
    last point cached.

    Sets ``x.grad``; raises JobCancelled when ``cancel`` is set, so that a cancel lands within
    one evaluation even inside a long L-BFGS round.
    """

    def __init__(
        self, objective: Callable[[Tensor], tuple[Tensor, Tensor]], box: Box | None = None
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

    def __call__(self) -> Tensor:
        x = self._x
        assert x is not None, "bind() the variable first"
        # Points that clamp to the same picture have the same loss and (straight-through)
        # gradient: the projection that ends a step costs no evaluation.
        point = x.detach() if self._box is None else self._box.clamp(x.detach())
        if self._last is not None and torch.equal(self._last[0], point):
            _, last_grad, last_loss = self._last
            x.grad = last_grad.clone()
            return last_loss
        if self._cancel is not None and self._cancel.is_set():
            raise JobCancelled("the job was cancelled")
        with torch.enable_grad():
            loss, terms = self._objective(x if self._box is None else self._box.clamp(x))
            (grad,) = torch.autograd.grad(loss, x)
        if not bool(torch.isfinite(loss)):
            # The options' weights and powers are bounded to keep the arithmetic finite; what
            # still overflows is the request's doing, and the caller's to change.
            raise OptionsError(
                "options",
                "the loss overflowed (inf or NaN) with these options: lower content_weight, "
                "style_weight, tv_weight or tv_power",
            )
        self._last = (point.clone(), grad, loss.detach())
        self.terms = terms.detach()
        x.grad = grad.clone()
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
        # One of the two, by ``kind``.
        self._adam_opt: torch.optim.Adam | None = None
        self._lbfgs_opt: torch.optim.LBFGS | None = None

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
        if self._lbfgs_opt is None:
            self._lbfgs_opt = self._fresh_lbfgs(_STEP_EVALS, self._history())
            return
        before = self._step(self._lbfgs_opt)
        if torch.equal(before, self._x):
            # The line search found nothing lower along the history's direction (rounding
            # noise in the curvature pairs): start over from the gradient.
            self._lbfgs_opt = self._fresh_lbfgs(_STEP_EVALS, self._history())

    def _step(self, opt: torch.optim.LBFGS) -> Tensor:
        """One ``opt.step``, projected into the box; returns the point it started from."""
        before = self._x.detach().clone()
        opt.step(self._evaluate)
        if self._box is not None:
            self._box.project_(self._x)
            state = opt.state[self._x]
            if state.get("t"):
                # torch's next curvature pair takes the step as d * t: make it the step taken.
                state["d"] = (self._x.detach() - before).flatten() / state["t"]
        return before

    def _history(self) -> int:
        """Curvature pairs (two pictures each) that fit the memory budget."""
        pair = 2 * self._x.numel() * self._x.element_size()
        return max(_MIN_HISTORY, min(_MAX_HISTORY, _HISTORY_BYTES // pair))

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
