"""The verdict of a search: each strategy's best configuration re-trained over fresh seeds, compared with
error bars and a paired test. Pure functions over plain records (no Ray, no files): the final stage
(`tune_mtl.search.final_stage`) and the summary writer feed them, tests call them directly.

One record per final trial (a strategy's configuration re-trained with one seed):

    {"strategy": "pcgrad", "candidate": 0, "seed_index": 2, "seed": 1000002, "status": "ok",
     "val_objective": 0.91, "objective": 0.90, "metrics": {"left/accuracy": 0.90, "right/accuracy": 0.87}}

`objective` and `metrics` are *test* values at the epoch the validation objective selected (`val_objective`).
`status` is "ok", "diverged" (non-finite loss), "error" (the trial crashed) or "collapsed" (a task's primary
metric at chance level). "ok" and "collapsed" records enter the means (a collapse is a result); every
non-"ok" record is counted per strategy.

Statistics (why these):
- 95% confidence interval of a mean: Student t, mean +- t_{0.975, n-1} s / sqrt(n) (few seeds, unknown
  variance).
- "Indistinguishable from the best": a two-sided paired t-test of each strategy against the best one over the
  seeds both finished (the seed index is shared: same initialisation seed, same data order, same generated
  data), Holm-corrected over the comparisons. A paired t-test rather than Wilcoxon's signed-rank test because
  with n <= 5 seeds Wilcoxon's smallest two-sided p-value is 2 / 2^n >= 0.0625: it could never separate
  anything at alpha = 0.05.
- Delta_m% (Maninis et al. 2019): per seed, against the reference strategy's same seed (`uniform`) or against
  the given single-task baselines; mean and interval over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from tune_mtl.core.delta_m import delta_m
from tune_mtl.core.keys import AT_SCORE, OBJECTIVE, SCORE, SCORE_EPOCH, TEST_OBJECTIVE
from tune_mtl.core.keys import DIVERGED as DIVERGED_KEY

CONFIDENCE = 0.95
ALPHA = 0.05
TEST_NAME = "two-sided paired t-test over shared seeds, Holm-corrected, alpha 0.05"
TPE_STARTUP_TRIALS = 10  # optuna.samplers.TPESampler's n_startup_trials default (what the engine uses)
OK, DIVERGED, ERROR, COLLAPSED = "ok", "diverged", "error", "collapsed"
COLLAPSE_MARGIN = 0.02  # accuracy within 2 points of chance: the model predicts (nearly) one class


# -- statistics (by hand; tests check them against scipy.stats) --------------------------------------------
def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom."""
    return float(special.stdtrit(dof, p))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t interval; one value has no interval (NaN half-width)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "half_width": math.nan, "low": math.nan, "high": math.nan}
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": mean - half, "high": mean + half}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of mean(a - b) = 0. Identical pairs (zero spread) give p = 1 when every
    difference is 0 and p = 0 otherwise (the t statistic is infinite)."""
    if len(a) != len(b):
        raise ValueError(f"paired_t_test needs pairs, got {len(a)} and {len(b)} values")
    n = len(a)
    if n < 2:
        return {"n": n, "t": math.nan, "p": math.nan}
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = math.fsum(diffs) / n
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std == 0.0:
        return {"n": n, "t": 0.0 if mean == 0.0 else math.copysign(math.inf, mean), "p": 1.0 if mean == 0.0 else 0.0}
    t = mean / (std / math.sqrt(n))
    p = 2.0 * float(special.stdtr(n - 1, -abs(t)))
    return {"n": n, "t": t, "p": p}


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN entries stay NaN and do not
    count as comparisons."""
    tested = sorted(((p, k) for k, p in p_values.items() if not math.isnan(p)))
    m = len(tested)
    adjusted: dict[str, float] = {k: math.nan for k, p in p_values.items() if math.isnan(p)}
    running = 0.0
    for i, (p, key) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return adjusted


# -- one final trial -> one record ------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flagged(value: Any) -> bool:
    # A pandas row holds NaN where a result lacked the key, and numpy's bool where it had it.
    return isinstance(value, (bool, np.bool_)) and bool(value)


def selected_epoch(history: Sequence[Mapping[str, Any]], mode: str) -> Mapping[str, Any] | None:
    """The epoch row with the best validation objective (the first of equals: early stopping keeps it)."""
    better = _better(mode)
    best = None
    for row in history:
        if _finite(row.get(OBJECTIVE)) and (best is None or better(row[OBJECTIVE], best[OBJECTIVE])):
            best = row
    return best


def final_record(history: Sequence[Mapping[str, Any]], mode: str, primary: Sequence[str], *, strategy: str,
                 candidate: int, seed_index: int, seed: int, errored: bool = False,
                 chance: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A final trial's record from its per-epoch results: test values at the validation-selected epoch.

    `primary`: the "task/metric" keys to report; `chance`: for classification accuracies, the value a
    constant prediction reaches (1 / classes) -- a trial at or below chance + COLLAPSE_MARGIN on any task
    counts as collapsed."""
    record: dict[str, Any] = {"strategy": strategy, "candidate": candidate, "seed_index": seed_index, "seed": seed,
                              "val_objective": math.nan, "objective": math.nan, "metrics": {}, "epoch": None}
    diverged = any(_flagged(row.get(DIVERGED_KEY)) for row in history)
    last = history[-1] if history else {}
    if _finite(last.get(SCORE)):  # the trainable's own score: every metric at the selected epoch, prefixed
        row: Mapping[str, Any] | None = {OBJECTIVE: last[SCORE], "epoch": last.get(SCORE_EPOCH),
                                         **{k[len(AT_SCORE):]: v for k, v in last.items()
                                            if isinstance(k, str) and k.startswith(AT_SCORE)}}
    else:  # results without keys.SCORE (older runs): select the epoch from the history
        row = selected_epoch(history, mode)
    if row is not None:
        record.update(val_objective=float(row[OBJECTIVE]), objective=float(row.get(TEST_OBJECTIVE, math.nan)),
                      epoch=int(row.get("epoch") or row.get("training_iteration") or 0),
                      metrics={k: float(row[f"test/{k}"]) for k in primary if _finite(row.get(f"test/{k}"))})
    if errored:
        record["status"] = ERROR
    elif diverged or row is None:
        record["status"] = DIVERGED
    elif chance and any(record["metrics"].get(k, math.inf) <= floor + COLLAPSE_MARGIN for k, floor in chance.items()):
        record["status"] = COLLAPSED
    else:
        record["status"] = OK
    return record


# -- records -> verdict ----------------------------------------------------------------------------------
def _better(mode: str) -> Callable[[float, float], bool]:
    return (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)


def _ok(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The seeds that enter the means: finished with a finite score. A collapsed seed is a real (bad) result
    and counts; a diverged or crashed one has no value and is only counted."""
    return [r for r in records if r["status"] in (OK, COLLAPSED) and math.isfinite(r["objective"])]


def chosen_candidate(records: Sequence[Mapping[str, Any]], mode: str) -> int | None:
    """Of a strategy's top-k configurations, the one with the best mean *validation* objective over its seeds
    (choosing on the test values would select on the test split)."""
    by_candidate: dict[int, list[float]] = {}
    for r in _ok(records):
        if math.isfinite(r.get("val_objective", math.nan)):
            by_candidate.setdefault(r["candidate"], []).append(r["val_objective"])
    if not by_candidate:
        return None
    better = _better(mode)
    means = [(candidate, math.fsum(values) / len(values)) for candidate, values in sorted(by_candidate.items())]
    best = means[0]
    for candidate, mean in means[1:]:
        if better(mean, best[1]):
            best = (candidate, mean)
    return best[0]


def _per_seed(records: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    return {r["seed_index"]: r for r in _ok(records)}


def _seed_delta_m(metrics: Mapping[str, float], reference: Mapping[str, float],
                  higher_is_better: Mapping[str, bool]) -> float:
    try:
        return delta_m(metrics, reference, higher_is_better)
    except ValueError:  # a reference metric of 0 or missing: no Delta_m for this seed
        return math.nan


def compute_verdict(
    records: Sequence[Mapping[str, Any]],
    mode: str,
    higher_is_better: Mapping[str, bool],
    reference: str = "uniform",
    baselines: Mapping[str, float] | None = None,
    search_trials: Mapping[str, Mapping[str, int]] | None = None,
    num_samples: int | None = None,
    startup_trials: int = TPE_STARTUP_TRIALS,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The verdict table as a dict (see the module doc for `records`).

    `higher_is_better`: every task's primary metric key ("task/metric") -> direction; these are the columns.
    `baselines`: single-task values of those metrics; when given, Delta_m% is against them instead of the
    reference strategy. `search_trials`: per strategy {"trials", "diverged", "collapsed"} of the search itself.
    `num_samples`: the search's trials per strategy (to warn when it is below TPE's random start-up).
    """
    strategies = list(dict.fromkeys(r["strategy"] for r in records))
    chosen: dict[str, list[Mapping[str, Any]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name in strategies:
        mine = [r for r in records if r["strategy"] == name]
        candidate = chosen_candidate(mine, mode)
        seeds = [r for r in mine if r["candidate"] == (candidate if candidate is not None else mine[0]["candidate"])]
        chosen[name] = seeds
        ok = _ok(seeds)
        counts = {status: sum(r["status"] == status for r in seeds) for status in (DIVERGED, ERROR, COLLAPSED)}
        rows[name] = {
            "candidate": candidate,
            "seeds": len(seeds),
            "objective": mean_interval([r["objective"] for r in ok]),
            "values": {r["seed_index"]: r["objective"] for r in ok},  # per seed index (the plot's points)
            "metrics": {key: mean_interval([r["metrics"][key] for r in ok
                                            if math.isfinite(r["metrics"].get(key, math.nan))])
                        for key in higher_is_better},
            "final_failures": counts,
            "search": dict(search_trials.get(name, {})) if search_trials else {},
        }

    # Delta_m% per seed, against the reference's same seed (or the fixed baselines).
    reference_seeds = _per_seed(chosen.get(reference, []))
    delta_against = "baselines" if baselines else (reference if reference in chosen else None)
    for name in strategies:
        values = []
        for index, record in _per_seed(chosen[name]).items():
            if baselines:
                values.append(_seed_delta_m(record["metrics"], baselines, higher_is_better))
            elif index in reference_seeds:
                ref = {k: reference_seeds[index]["metrics"][k] for k in higher_is_better
                       if k in reference_seeds[index]["metrics"]}
                values.append(_seed_delta_m(record["metrics"], ref, higher_is_better))
        values = [v for v in values if math.isfinite(v)]
        rows[name]["delta_m"] = mean_interval(values) if delta_against else mean_interval([])

    # Rank by mean objective; the best is compared with every other strategy over their shared seeds.
    finite = [n for n in strategies if rows[n]["objective"]["n"] > 0]
    ranked = sorted(finite, key=lambda n: rows[n]["objective"]["mean"] * (1 if mode == "min" else -1))
    for position, name in enumerate(ranked, start=1):
        rows[name]["rank"] = position
    for name in strategies:
        rows[name].setdefault("rank", None)
    best = ranked[0] if ranked else None
    raw_p: dict[str, float] = {}
    if best is not None:
        best_seeds = _per_seed(chosen[best])
        for name in ranked[1:]:
            own = _per_seed(chosen[name])
            shared = sorted(set(own) & set(best_seeds))
            test = paired_t_test([own[i]["objective"] for i in shared], [best_seeds[i]["objective"] for i in shared])
            rows[name]["test"] = test
            raw_p[name] = test["p"]
    adjusted = holm(raw_p)
    for name in strategies:
        if name == best:
            rows[name]["vs_best"] = "best"
        elif name in adjusted:
            p = adjusted[name]
            rows[name]["p_holm"] = p
            rows[name]["vs_best"] = ("untested (< 2 shared seeds)" if math.isnan(p)
                                     else "indistinguishable" if p >= alpha else "worse")
        else:
            rows[name]["vs_best"] = "no finished seed"
    return {
        "mode": mode,
        "best": best,
        "ranking": ranked,
        "indistinguishable_from_best": [n for n in ranked if rows[n]["vs_best"] in ("best", "indistinguishable")],
        "test": TEST_NAME.replace("0.05", f"{alpha:g}"),
        "interval": f"{CONFIDENCE:.0%} Student-t interval of the mean over seeds",
        "delta_m_against": delta_against,
        "strategies": rows,
        "warnings": warnings(rows, num_samples, startup_trials),
    }


def warnings(rows: Mapping[str, Mapping[str, Any]], num_samples: int | None, startup_trials: int) -> list[str]:
    """What the search is too small to claim."""
    out = []
    if num_samples is not None and num_samples <= startup_trials:
        out.append(f"{num_samples} trials per strategy, no more than TPE's {startup_trials} random start-up "
                   "trials: the search was a random search")
    seeds = sorted({row["objective"]["n"] for row in rows.values()})
    if seeds and seeds[0] < 2:
        out.append("a strategy has fewer than 2 finished seeds: no interval and no test for it")
    elif seeds and seeds[0] < 5:
        out.append(f"only {seeds[0]} seeds: intervals are wide and the test has little power")
    return out


# -- formatting ----------------------------------------------------------------------------------------
def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))  # verdict_dict wrote NaN as None


def _fmt(stats: Mapping[str, Any], digits: int = 4) -> str:
    if stats["n"] == 0:
        return "-"
    if _nan(stats["half_width"]):
        return f"{stats['mean']:.{digits}g} (n=1)"
    return f"{stats['mean']:.{digits}g} ± {stats['half_width']:.2g}"


def verdict_markdown(verdict: Mapping[str, Any], objective_label: str = "test objective") -> str:
    """The verdict (from compute_verdict, or its verdict_dict copy) as a Markdown table plus its notes."""
    rows = verdict["strategies"]
    metrics = list(next(iter(rows.values()))["metrics"]) if rows else []
    head = ["rank", "strategy", f"{objective_label} ({verdict['mode']})", *metrics,
            f"Δm% vs {verdict['delta_m_against'] or '-'}", "vs best", "seeds ok/run",
            "search trials (diverged, collapsed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = verdict["ranking"] + [n for n in rows if n not in verdict["ranking"]]
    for name in order:
        row = rows[name]
        failures = row["final_failures"]
        bad = sum(failures.values())
        search = row["search"]
        search_text = (f"{search.get('trials', 0)} ({search.get('diverged', 0)}, {search.get('collapsed', 0)})"
                       if search else "-")
        vs = row["vs_best"] + (f" (p={row['p_holm']:.2g})" if not _nan(row.get("p_holm")) else "")
        cells = [str(row["rank"] or "-"), name, _fmt(row["objective"]), *(_fmt(row["metrics"][m]) for m in metrics),
                 _fmt(row["delta_m"], 3), vs,
                 f"{row['objective']['n']}/{row['seeds']}" + (f" ({bad} failed: {failures})" if bad else ""),
                 search_text]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Values: test split at the epoch the validation objective selected; mean ± half-width of the "
             f"{verdict['interval']}. Test: {verdict['test']}. Δm%: per seed against "
             f"{verdict['delta_m_against'] or 'nothing (no reference)'}, lower is better."]
    notes += [f"WARNING: {w}" for w in verdict["warnings"]]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def verdict_dict(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (NaN/inf -> None) for summary.json and the W&B summary."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return {str(k): clean(v) for k, v in verdict.items()}
