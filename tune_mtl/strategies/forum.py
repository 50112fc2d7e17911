"""FORUM (Ye, Lin et al., ECAI 2024): first-order multi-gradient method for multi-objective bilevel problems.

The bilevel MTL problem (upper level: every task's loss; lower level: the model trained on
f(a, w) = sum_t softmax(a)_t l_t) is rewritten with the value function as the constrained multi-objective
problem min_{a,w} F(w) s.t. q(a, w) = f(a, w) - min_w' f(a, w') <= 0, and solved with first-order
information only, as in LibMTL's `train_FORUM`:
  * g_q = grad f(a, w) minus, in the a-block, grad_a f(a, w_K), w_K after `inner_steps` SGD steps (lr
    `inner_lr`) on f from w (a copy: the real parameters do not move);
  * the upper-level task gradients g_t (all model parameters, unit-normalised, zero a-block);
  * pi_t = phi - <g_q, g_t> / |g_q|^2; the weights solve the small QP
    min_{w >= 0} |A^T w|^2 - w_q phi |g_q|^2, sum_t w_t = 1, w_q >= sum_t w_t pi_t  (A = [g_1..g_T, g_q]);
  * lambda <- lambda + (w - lambda) / (epoch + 1)^(3/4); nu = max(sum_t lambda_t pi_t, 0);
  * update d = sum_t lambda_t g_t + nu g_q: its a-block steps the logits (own Adam, lr `outer_lr`), the rest
    is the gradient of every model parameter.
Difference: LibMTL draws a lower- and an upper-level batch per step; here the current batch is halved.
The QP is solved with scipy's SLSQP (LibMTL: cvxpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import FORUMKnobs
from tune_mtl.strategies.learned_weights import LearnedWeights
from tune_mtl.strategies.min_norm import to_numpy
from tune_mtl.strategies.stochastic_moo import piece_indices, sub_batch, trial_state


def solve_forum_qp(M: np.ndarray, pi: np.ndarray, c: float) -> np.ndarray:
    """argmin_{w >= 0} w^T M w - c w[-1]  s.t.  sum(w[:-1]) = 1,  w[-1] >= pi . w[:-1]."""
    T = len(pi)
    start = np.append(np.full(T, 1.0 / T), max(float(pi.mean()), 0.0))
    result = minimize(
        lambda w: float(w @ M @ w - c * w[-1]),
        start,
        jac=lambda w: 2.0 * M @ w - c * np.eye(T + 1)[-1],
        method="SLSQP",
        bounds=[(0.0, None)] * (T + 1),
        constraints=[
            {"type": "eq", "fun": lambda w: w[:-1].sum() - 1.0, "jac": lambda w: np.append(np.ones(T), 0.0)},
            {"type": "ineq", "fun": lambda w: w[-1] - pi @ w[:-1], "jac": lambda w: np.append(-pi, 1.0)},
        ],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    weights: np.ndarray = np.clip(result.x, 0.0, None)
    return weights


class FORUM(Strategy, declaration=declared.FORUM):
    knobs: FORUMKnobs
    learned: LearnedWeights

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.learned = LearnedWeights(torch.zeros(num_tasks), lr=self.knobs.outer_lr)
        self.lambd = np.zeros(num_tasks)

    @property
    def logits(self) -> Tensor:
        return self.learned.values

    def _lower_level_alpha_grad(self, ctx: StepContext, params: list[nn.Parameter], lower: Tensor) -> Tensor:
        """grad_a f(a, w_K), w_K after `inner_steps` SGD steps on f(a, .) from the current parameters."""
        batch = sub_batch(ctx.batch, lower)
        z = torch.softmax(self.logits.detach(), dim=0)
        with trial_state(ctx.model):
            for _ in range(self.knobs.inner_steps):
                loss = (z.to(ctx.losses) * ctx.compute_losses(batch).mean(dim=1)).sum()
                if not torch.isfinite(loss) or loss.item() > 1e5:  # diverging look-ahead: stop as LibMTL does
                    break
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        if g is not None:
                            p.data = p.data - self.knobs.inner_lr * g
            with torch.no_grad():
                inner_losses = ctx.compute_losses(batch).mean(dim=1)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.softmax(self.logits, dim=0), self.logits,
                                          grad_outputs=inner_losses.to(self.logits))
        return grad

    def backward(self, ctx: StepContext) -> dict[str, float]:
        T = ctx.num_tasks
        params = [*ctx.shared_params, *ctx.all_task_params]
        lower, upper = piece_indices(ctx.losses.shape[1], 2, ctx.losses.device)
        f = (torch.softmax(self.logits, dim=0).to(ctx.losses) * ctx.losses[:, lower].mean(dim=1)).sum()
        g_f = jac.flatten_grads(
            [None if g is None else g.unsqueeze(0) for g in
             torch.autograd.grad(f, [self.logits, *params], retain_graph=True, allow_unused=True)],
            [self.logits, *params], 1,
        )[0].detach()
        g_q = g_f.clone()
        g_q[:T] -= self._lower_level_alpha_grad(ctx, params, lower).to(g_q)
        J_F = jac.task_jacobian(ctx.losses[:, upper].mean(dim=1), params, retain_graph=False).detach()
        J_F = J_F / (J_F.norm(dim=1, keepdim=True) + 1e-8)
        g_F = torch.cat([torch.zeros(T, T, dtype=J_F.dtype, device=J_F.device), J_F], dim=1)
        q_sq = float(g_q.pow(2).sum()) + 1e-8
        pi = self.knobs.phi - to_numpy(g_F @ g_q) / q_sq
        A = torch.cat([g_F, g_q.unsqueeze(0)], dim=0)
        w = solve_forum_qp(to_numpy(A @ A.T), pi, self.knobs.phi * q_sq)
        self.lambd = self.lambd + (w[:T] - self.lambd) / (ctx.epoch + 1) ** 0.75
        nu = max(float(self.lambd @ pi), 0.0)
        direction = torch.as_tensor(self.lambd, dtype=g_F.dtype, device=g_F.device) @ g_F + nu * g_q
        self.learned.step(direction[:T])
        jac.write_grads(params, direction[T:])
        return {**weight_logs(torch.as_tensor(self.lambd), prefix="lambda"), "nu": nu,
                **weight_logs(torch.softmax(self.logits.detach(), dim=0))}

    def state_dict(self) -> dict[str, Any]:
        logits, optimizer = self.learned.state()
        return {"logits": logits, "opt": optimizer, "lambd": self.lambd.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learned.load(state["logits"], state["opt"])
        self.lambd = np.array(state["lambd"], dtype=float)
