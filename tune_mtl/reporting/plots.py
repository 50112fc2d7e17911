"""PNG plots of a run (matplotlib, Agg: no display needed): written by `launch.py report RUN_DIR` into
RUN_DIR/plots/. Works from the summary (itself read back from the run folder) and the Optuna studies."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tune_mtl.reporting.own_ranges import disclosure_lines
from tune_mtl.storage.run_folder import RunFolder
from tune_mtl.storage.secrets import is_masked

MIN_TRIALS_FOR_IMPORTANCE = 2
# Optuna 5's own default evaluator, named on the plot (Optuna 4 defaulted to fANOVA: the label must say which).
IMPORTANCE_METHOD = "PED-ANOVA"


def _direction(mode: str) -> str:
    return "lower is better" if mode == "min" else "higher is better"


def _objective_label(summary: dict[str, Any], split: str = "validation") -> str:
    o = summary["objective"]
    return f"{split} {o['metric']} of {o['task']} ({_direction(o['mode'])})"


def _save(fig: Figure, path: Path, bottom: float = 0.0) -> Path:
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))  # `bottom`: the figure fraction kept for the caveats
    fig.savefig(path, dpi=100)
    return path


def _subplots(figsize: tuple[float, float], **grid: Any) -> tuple[Figure, Any]:
    # A bare Figure (no pyplot): no global backend switch, no figure registry to close; savefig renders with Agg.
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(**grid)


def caveats(summary: dict[str, Any]) -> list[str]:
    """What the search is too small to claim (the verdict's warnings, or, without a final stage, that every
    number comes from one seed), then which strategies were tuned in ranges of their own (unequal tuning)."""
    verdict = summary.get("verdict")
    if verdict:
        notes = list(verdict.get("warnings", []))
    else:
        notes = ["one seed per configuration (no final stage): no error bars; re-run with --final-seeds N"]
    return notes + disclosure_lines(summary.get("own_ranges") or {})


def _fitted(text: str, fig: Figure, fontsize: float) -> str:
    """`text` wrapped to the figure's width (a character is about 0.6 em wide), so that nothing is cut off."""
    return textwrap.fill(text, width=max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize))),
                         subsequent_indent="  ")


def _caveat_box(fig: Figure, summary: dict[str, Any]) -> float:
    """The caveats in red under the axes; returns the figure fraction they take (for _save)."""
    notes = [_fitted(f"! {n}", fig, 7) for n in caveats(summary)]
    if not notes:
        return 0.0
    text = "\n".join(notes)
    fig.text(0.01, 0.01, text, fontsize=7, color="firebrick", va="bottom", ha="left")
    return 0.02 + 7 * 1.25 / 72 / fig.get_figheight() * (text.count("\n") + 1)  # 1.25 line spacing, in points


def trials_per_strategy(summary: dict[str, Any], folder: Path) -> Path | None:
    """Every trial's score (its best validation epoch), strategy by strategy: a box over the points, the
    count (and the failed trials) under each name."""
    groups = [(name, [v for v in (s.get("scores") or {}).values() if v is not None], s)
              for name, s in summary["strategies"].items()]
    groups = [g for g in groups if g[1]]
    if not groups:
        return None
    fig, ax = _subplots((max(4.5, 1.3 * len(groups)), 4.2))
    ax.boxplot([values for _, values, _ in groups], widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)
    for i, (_, values, _) in enumerate(groups, start=1):
        ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.7, color="C0", zorder=3)
    labels = [f"{name}\nn={len(values)}" + (f", {len(s['failed'])} failed" if s["failed"] else "")
              for name, values, s in groups]
    ax.set_xticks(range(1, len(groups) + 1), labels, fontsize=8)
    ax.set_ylabel(_objective_label(summary))
    ax.set_title(_fitted("every search trial (score: best validation epoch, one seed)", fig, 10), fontsize=10)
    return _save(fig, folder / "trials_per_strategy.png", bottom=_caveat_box(fig, summary))


def final_seeds(summary: dict[str, Any], folder: Path) -> Path | None:
    """The verdict: each strategy's re-trained configuration, mean and 95% interval over the final seeds, the
    seeds as points; the best and those statistically indistinguishable from it in colour."""
    verdict = summary.get("verdict")
    if not verdict:
        return None
    rows = verdict["strategies"]
    order = [n for n in verdict["ranking"]] + [n for n in rows if n not in verdict["ranking"]]
    fig, ax = _subplots((max(4.5, 1.3 * len(order)), 4.4))
    tied = set(verdict["indistinguishable_from_best"])
    for i, name in enumerate(order):
        row = rows[name]
        stats = row["objective"]
        values = list((row.get("values") or {}).values())
        color = "C2" if name in tied else "C7"
        ax.scatter([i] * len(values), values, s=12, color=color, alpha=0.5, zorder=2)
        if stats["n"]:
            half = stats["half_width"] if stats["half_width"] is not None else 0.0
            ax.errorbar([i], [stats["mean"]], yerr=[half], fmt="o", color=color, capsize=6, ms=7, zorder=3)
    labels = []
    for n in order:
        failures = ", ".join(f"{count} {kind}" for kind, count in rows[n]["final_failures"].items() if count)
        seeds = f"{n}\n{rows[n]['objective']['n']}/{rows[n]['seeds']} seeds"
        labels.append(seeds + (f"\n{failures}" if failures else ""))
    ax.set_xticks(range(len(order)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(_objective_label(summary, split="test") + "\nat the epoch validation selected", fontsize=8)
    title = (f"final seeds: mean and {verdict['interval'].split(' of')[0]}; green: the best and those "
             f"indistinguishable from it ({verdict['test']})")
    ax.set_title(textwrap.fill(title, width=60), fontsize=8)  # wrapped: the test's name is long
    return _save(fig, folder / "final_seeds.png", bottom=_caveat_box(fig, summary))


def learning_curves(summary: dict[str, Any], folder: Path) -> Path | None:
    """Each strategy's best search trial: validation (solid) and test (dashed) per epoch, the epoch its
    validation score selected marked."""
    done = [(name, s["best"]) for name, s in summary["strategies"].items() if s["best"] and s["best"].get("curve")]
    if not done:
        return None
    cols = min(3, len(done))
    rows = -(-len(done) // cols)
    fig, axes = _subplots((3.6 * cols, 2.9 * rows + 0.6), nrows=rows, ncols=cols, squeeze=False, sharey=True)
    metric = summary["objective"]
    last_epoch = max(max(best["curve"]["epoch"], default=1) for _, best in done)
    for ax, (name, best) in zip(axes.flat, done, strict=False):
        curve = best["curve"]
        ax.plot(curve["epoch"], curve["val"], marker="o", ms=3, label="validation")
        tests = [(e, t) for e, t in zip(curve["epoch"], curve["test"], strict=True) if t is not None]
        if tests:
            ax.plot([e for e, _ in tests], [t for _, t in tests], marker="s", ms=3, ls="--", label="test")
        if best.get("epoch"):
            ax.axvline(best["epoch"], color="C3", lw=1, ls=":", label=f"selected (epoch {best['epoch']})")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0.5, last_epoch + 0.5)  # one epoch would otherwise get fractional ticks around it
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{metric['metric']} of {metric['task']}\n({_direction(metric['mode'])})", fontsize=8)
    for ax in list(axes.flat)[len(done):]:
        ax.axis("off")
    fig.suptitle("learning curves of each strategy's best search trial", fontsize=10)
    return _save(fig, folder / "learning_curves.png")


def pareto(summary: dict[str, Any], folder: Path) -> Path | None:
    if "pareto_front" not in summary:
        return None
    x, y = (o["key"] for o in summary["objectives"][:2])  # the first two objectives
    fig, ax = _subplots((4.5, 4))
    others = summary["pareto_front"]["dominated"]
    ax.scatter([p[x] for p in others], [p[y] for p in others], color="lightgrey", label="dominated")
    points = sorted((p["values"][x], p["values"][y]) for p in summary["pareto_front"]["trials"])
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="C3", label="Pareto front")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title("Pareto front (last epoch)")
    ax.legend()
    return _save(fig, folder / "pareto_front.png")


def importances(summary: dict[str, Any], folder: Path) -> tuple[list[Path], list[str]]:
    import optuna

    storage = summary["optuna_storage"]
    if not summary.get("studies"):
        return [], ["parameter importances: this run has no Optuna study (PBT)"]
    if is_masked(storage):
        return [], ["parameter importances: the Optuna storage URL needs its password (open it with "
                    "optuna-dashboard instead)"]
    paths, skipped = [], []
    for experiment, name in summary["studies"].items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            skipped.append(f"parameter importances of '{experiment}': the study does not exist yet")
            continue
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
            skipped.append(f"parameter importances of '{experiment}': {len(complete)} complete trial(s), "
                           f"needs {MIN_TRIALS_FOR_IMPORTANCE}")
            continue
        # A multi-objective study has no single value: rank parameters by the first objective.
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        try:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        except (RuntimeError, ValueError) as err:  # e.g. no parameter varied across the complete trials
            skipped.append(f"parameter importances of '{experiment}': {err}")
            continue
        fig, ax = _subplots((6, 0.35 * len(scores) + 1.8))
        ax.barh(list(scores)[::-1], list(scores.values())[::-1])
        ax.set_xlabel(f"importance ({IMPORTANCE_METHOD}, normalised to sum 1)")
        ax.set_title(f"parameter importances: {experiment}\n(from {len(complete)} complete trials)", fontsize=10)
        paths.append(_save(fig, folder / f"importance_{experiment}.png"))
    return paths, skipped


def write_plots(summary: dict[str, Any], run: RunFolder) -> tuple[list[Path], list[str]]:
    """The plot files written, and why any plot was skipped."""
    folder = run.path / "plots"
    folder.mkdir(exist_ok=True)
    paths = [p for p in (trials_per_strategy(summary, folder), final_seeds(summary, folder),
                         learning_curves(summary, folder), pareto(summary, folder)) if p]
    more, skipped = importances(summary, folder)
    return paths + more, skipped
