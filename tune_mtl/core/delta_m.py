"""The multi-task performance drop Delta_m% (Maninis et al., CVPR 2019; as reported by LibMTL and Nash-MTL):

    Delta_m = 100 / K * sum_k (-1)^{l_k} (M_mtl,k - M_stl,k) / M_stl,k,   l_k = 1 if higher is better

over the K metrics that have a baseline M_stl (usually single-task learning with the same backbone).
It is a *drop*: lower is better, negative means the multi-task model beats its baselines on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def delta_m(
    metrics: Mapping[str, float], baselines: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Delta_m% of `metrics` against `baselines`, averaged over every key of `baselines`.

    `metrics` may hold more keys than `baselines` (only the baseline keys count); every baseline key needs a
    value in `metrics` and a direction in `higher_is_better`, and no baseline may be 0.
    """
    if not baselines:
        raise ValueError("delta_m needs at least one baseline metric")
    total = 0.0
    for key, base in baselines.items():
        if key not in metrics:
            raise ValueError(f"delta_m: metric '{key}' has a baseline but no value; got {sorted(metrics)}")
        if key not in higher_is_better:
            raise ValueError(f"delta_m: metric '{key}' needs a direction in higher_is_better")
        base = float(base)
        if base == 0.0 or not math.isfinite(base):
            raise ValueError(f"delta_m: the baseline of '{key}' must be finite and non-zero, got {base}")
        sign = -1.0 if higher_is_better[key] else 1.0
        total += sign * (float(metrics[key]) - base) / abs(base)
    return 100.0 * total / len(baselines)
