"""The synthetic MTL benchmark of the SLGrad paper (after GradNorm's toy problem); needs no files.

    x ~ N(0, I_d),  B ~ N(0, 1)^d shared by all tasks,  eps_t ~ N(0, 3.5)^d per task (variance 3.5)
    regression:      y_t = | sigma_t * tanh((B + eps_t) . x) |
    classification:  y_t = 1[(B + eps_t) . x > 0]

As in the SLGrad seed's generator (vub-dl/SLGrad, `np.random.normal(0, np.sqrt(3.5), ...)`), the task noise
eps_t has *variance* 3.5 (std 1.87): `task_noise_std` changes it (3.5 gives the earlier, far less related
tasks: with 2 toy_classification tasks the labels agree on about 0.53 of the samples instead of 0.57).
1000 points (configurable) split 600/200/200. Label noise, applied to the *training* split only so that
validation and test measure the clean task: a `fraction` of the labels of the main task (or of all tasks)
is replaced by the constant -0.5 (`constant`) or by N(0, 0.2^2) draws (`gaussian`). For classification,
`constant` sets the label to class 0 and `gaussian` draws a uniformly random class.
Targets are [N] per task (never [N, 1]) so per-sample losses are [T, B] without broadcasting.
"""

from __future__ import annotations

from typing import Any

import torch

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import DataBundle, TensorSplit, runtime_tasks
from tune_mtl.data.declarations.toy import TASK_NOISE_STD, declare_tasks

NOISE_CONSTANT = -0.5
NOISE_STD = 0.2


def generate(
    num_tasks: int, input_dim: int, num_samples: int, sigmas: list[float], regression: bool, seed: int,
    task_noise_std: float = TASK_NOISE_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean inputs [N, d] and targets [T, N]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, input_dim, generator=g)
    shared = torch.randn(input_dim, generator=g)
    eps = torch.randn(num_tasks, input_dim, generator=g) * task_noise_std
    logits = x @ (shared + eps).T  # [N, T]
    if regression:
        y = (torch.tensor(sigmas).unsqueeze(0) * torch.tanh(logits)).abs()
    else:
        y = (logits > 0).float()
    return x, y.T.contiguous()


def add_noise(
    y: torch.Tensor, fraction: float, kind: str, tasks: str, regression: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace `fraction` of the labels of the noisy tasks. Returns (noisy [T, N], mask [T, N] of replaced)."""
    y = y.clone()
    mask = torch.zeros_like(y, dtype=torch.bool)
    n = y.shape[1]
    count = round(fraction * n)
    for t in range(y.shape[0] if tasks == "all" else 1):
        idx = torch.randperm(n, generator=generator)[:count]
        mask[t, idx] = True
        if regression:
            y[t, idx] = NOISE_CONSTANT if kind == "constant" else torch.randn(count, generator=generator) * NOISE_STD
        else:
            y[t, idx] = 0.0 if kind == "constant" else torch.randint(0, 2, (count,), generator=generator).float()
    return y, mask


def _build(options: dict[str, Any], seed: int, regression: bool) -> DataBundle:
    name = "toy_regression" if regression else "toy_classification"
    opts = options
    T = opts["num_tasks"]
    sigmas = opts["sigmas"] or [1.0] * T
    if len(sigmas) != T or not all(isinstance(s, (int, float)) for s in sigmas):
        raise UserError(f"'dataset.{name}.sigmas' must be a list of {T} numbers, got {sigmas!r}")
    data_seed = seed if opts["data_seed"] is None else opts["data_seed"]
    x, y = generate(T, opts["input_dim"], opts["num_samples"], [float(s) for s in sigmas], regression, data_seed,
                    opts["task_noise_std"])
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    y_train, noise_mask = add_noise(
        y[:, :n_train], opts["noise"], opts["noise_kind"], opts["noise_tasks"], regression,
        torch.Generator().manual_seed(data_seed + 1),
    )

    def split(inputs: torch.Tensor, targets: torch.Tensor) -> TensorSplit:  # targets [T, N, ...]
        return TensorSplit(inputs, tuple(targets[t] for t in range(T)))

    return DataBundle(
        name=name,
        train=split(x[:n_train], y_train),
        val=split(x[n_train : n_train + n_val], y[:, n_train : n_train + n_val]),
        test=split(x[n_train + n_val :], y[:, n_train + n_val :]),
        tasks=runtime_tasks(declare_tasks(opts, regression)),
        input_shape=(opts["input_dim"],),
        default_model="mlp",
        info={"options": opts, "noise_mask": noise_mask},
    )


def toy_regression(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `toy_regression` (declared in data/declarations/toy.py)."""
    return _build(options, seed, regression=True)


def toy_classification(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `toy_classification` (declared in data/declarations/toy.py)."""
    return _build(options, seed, regression=False)
