"""Optimisers over the picture, one ``iteration`` at a time, and the evaluation cache under them.

torch's L-BFGS evaluates the loss at the start of every ``step`` call, usually at the point its
last line search already evaluated, and the job asks for the losses of each iterate to report
them: ``Evaluator`` remembers the last point, so neither costs a second pass of the network.

L-BFGS comes in two forms. With ``evals`` > 1 an iteration is a *round* in the sense of the Keras
example: a fresh L-BFGS (its history reset, as each call of scipy's ``fmin_l_bfgs_b`` resets it)
with a strong-Wolfe line search, stopped after ``evals`` evaluations. With ``evals`` == 1 one
L-BFGS keeps its history for the whole stage and takes a fixed unit step per evaluation, the
cheapest way to spend evaluations. Either way the very first step is scaled to move the most
changed pixel by ``first_step`` (0-255 units): torch's default first step, ``1/|g|_1``, barely
moves pixels whose gradients are large.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

from styleserve_server.engine.records import JobCancelled

__all__ = ["Evaluator", "Optimizer"]

# Scipy's L-BFGS-B default memory, which the Keras example relies on; also bounds memory per job
# (2 * history pictures).
_HISTORY = 10


class Evaluator:
    """Loss and gradient of ``objective`` at ``x``, with the last point cached.

    Sets ``x.grad``; raises JobCancelled when ``cancel`` is set, so that a cancel lands within
    one evaluation even inside a long L-BFGS round.
    """

    def __init__(self, objective: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
        self._objective = objective
        self._x: Tensor | None = None
        self._cancel: threading.Event | None = None
        self._point: Tensor | None = None
        self._grad: Tensor | None = None
        self._loss: Tensor | None = None
        self.terms: Tensor | None = None
        self.evaluations = 0

    def bind(self, x: Tensor, cancel: threading.Event | None) -> None:
        """Evaluate at ``x`` from now on, polling ``cancel``."""
        self._x, self._cancel = x, cancel

    def __call__(self) -> Tensor:
        x = self._x
        assert x is not None, "bind() the variable first"
        if self._point is not None and torch.equal(self._point, x):
            x.grad = self._grad.clone()
            return self._loss
        if self._cancel is not None and self._cancel.is_set():
            raise JobCancelled("the job was cancelled")
        with torch.enable_grad():
            loss, terms = self._objective(x)
            (grad,) = torch.autograd.grad(loss, x)
        self.evaluations += 1
        self._point, self._grad = x.detach().clone(), grad
        self._loss, self.terms = loss.detach(), terms.detach()
        x.grad = grad.clone()
        return self._loss


class Optimizer:
    """``kind`` ("lbfgs" or "adam") advancing ``x`` by one iteration, ``evals`` evaluations, per
    ``iteration()`` call; ``first_step`` is L-BFGS's first step or Adam's step, in pixel units."""

    def __init__(
        self, kind: str, x: Tensor, evaluator: Evaluator, evals: int, first_step: float
    ) -> None:
        self._kind = kind
        self._x = x
        self._evaluate = evaluator
        self._evals = evals
        self._first_step = first_step
        self._torch: torch.optim.Optimizer | None = None

    def iteration(self) -> None:
        if self._kind == "adam":
            self._adam()
        elif self._evals > 1 or self._torch is None:
            self._fresh_lbfgs()
        else:
            before = self._x.detach().clone()
            self._torch.step(self._evaluate)
            if torch.equal(before, self._x):
                # No descent direction from the history (rounding): start over from the gradient.
                self._fresh_lbfgs()

    def _adam(self) -> None:
        if self._torch is None:
            self._torch = torch.optim.Adam([self._x], lr=self._first_step)
        for _ in range(self._evals):
            self._torch.step(self._evaluate)

    def _fresh_lbfgs(self) -> None:
        rounds = self._evals > 1
        self._torch = opt = torch.optim.LBFGS(
            [self._x],
            lr=1.0,
            max_iter=1,
            max_eval=self._evals,
            tolerance_grad=0.0,
            history_size=_HISTORY,
            line_search_fn="strong_wolfe" if rounds else None,
        )
        # First step alone, scaled: torch takes t = lr * min(1, 1/|g|_1) along -g.
        self._evaluate()
        grad = self._x.grad
        peak, l1 = float(grad.abs().max()), float(grad.abs().sum())
        if peak > 0:
            opt.param_groups[0]["lr"] = self._first_step / peak / min(1.0, 1.0 / l1)
        opt.step(self._evaluate)
        opt.param_groups[0]["lr"] = 1.0
        used = opt.state[self._x]["func_evals"]
        if rounds and used < self._evals:
            opt.param_groups[0].update(max_iter=self._evals, max_eval=self._evals - used)
            opt.step(self._evaluate)
