"""The verdict's statistics against scipy.stats (an independent implementation), and hand-made cases with
known answers for the table itself."""

from __future__ import annotations

import inspect
import math

import numpy as np
import optuna
import pytest
from scipy import stats

from tune_mtl.core.keys import DIVERGED, OBJECTIVE, TEST_OBJECTIVE
from tune_mtl.reporting.verdict import (
    COLLAPSED,
    OK,
    TPE_STARTUP_TRIALS,
    compute_verdict,
    final_record,
    holm,
    mean_interval,
    paired_t_test,
    verdict_dict,
    verdict_markdown,
)
from tune_mtl.reporting.verdict import (
    DIVERGED as DIVERGED_STATUS,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_interval_matches_scipy(n):
    values = RNG.normal(0.8, 0.05, size=n).tolist()
    ours = mean_interval(values)
    low, high = stats.t.interval(0.95, n - 1, loc=np.mean(values), scale=stats.sem(values))
    assert ours["mean"] == pytest.approx(np.mean(values))
    assert ours["std"] == pytest.approx(np.std(values, ddof=1))
    assert (ours["low"], ours["high"]) == pytest.approx((low, high), rel=1e-10)


def test_interval_of_one_value_has_no_width():
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["half_width"])
    assert mean_interval([])["n"] == 0


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_t_test_matches_scipy(n):
    a = RNG.normal(0.8, 0.05, size=n)
    b = a + RNG.normal(0.01, 0.02, size=n)
    ours = paired_t_test(a.tolist(), b.tolist())
    ref = stats.ttest_rel(a, b)
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-8)


def test_paired_t_test_without_spread():
    assert paired_t_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])["p"] == 1.0  # identical runs (pcgrad == uniform)
    assert paired_t_test([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])["p"] == 0.0  # a constant shift (exact in binary)
    assert math.isnan(paired_t_test([0.1], [0.2])["p"])


def test_holm_by_hand():
    # Sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06, monotone).
    assert holm({"a": 0.04, "b": 0.01, "c": 0.03}) == pytest.approx({"a": 0.06, "b": 0.03, "c": 0.06})
    assert holm({"a": 0.5, "b": 0.9})["b"] == 1.0  # capped
    adjusted = holm({"a": 0.01, "b": math.nan})
    assert adjusted["a"] == pytest.approx(0.01) and math.isnan(adjusted["b"])  # NaN is not a comparison


def test_tpe_startup_matches_optuna():
    default = inspect.signature(optuna.samplers.TPESampler.__init__).parameters["n_startup_trials"].default
    assert TPE_STARTUP_TRIALS == default


# -- records and the table -----------------------------------------------------------------------------
def record(strategy, seed_index, objective, right, status=OK, candidate=0, val=None):
    return {"strategy": strategy, "candidate": candidate, "seed_index": seed_index, "seed": 100 + seed_index,
            "status": status, "val_objective": objective if val is None else val, "objective": objective,
            "metrics": {"left/accuracy": objective, "right/accuracy": right}}


HIGHER = {"left/accuracy": True, "right/accuracy": True}
UNIFORM = [0.80, 0.82, 0.78, 0.81, 0.79]
MGDA = [0.70, 0.71, 0.69, 0.72, 0.70]  # clearly worse on every seed
PCGRAD = [0.81, 0.81, 0.79, 0.82, 0.78]  # level with uniform (mean 0.802 against 0.800)


def table(**kwargs):
    records = [record("uniform", i, v, 0.70) for i, v in enumerate(UNIFORM)]
    records += [record("mgda", i, v, 0.77) for i, v in enumerate(MGDA)]
    records += [record("pcgrad", i, v, 0.70) for i, v in enumerate(PCGRAD)]
    records += [record("slgrad", 0, math.nan, math.nan, status=DIVERGED_STATUS),
                record("slgrad", 1, 0.10, 0.10, status=COLLAPSED)]
    return compute_verdict(records, "max", HIGHER, **kwargs)


def test_verdict_ranks_tests_and_counts():
    verdict = table(search_trials={"slgrad": {"trials": 4, "diverged": 2, "collapsed": 1}})
    rows = verdict["strategies"]
    assert verdict["ranking"] == ["pcgrad", "uniform", "mgda", "slgrad"]  # means 0.802, 0.800, 0.704, 0.10
    assert rows["pcgrad"]["rank"] == 1
    assert rows["uniform"]["vs_best"] == "indistinguishable"
    assert rows["mgda"]["vs_best"] == "worse"
    # Holm over the two comparisons, each against scipy's paired test.
    p_uniform = stats.ttest_rel(UNIFORM, PCGRAD).pvalue
    p_mgda = stats.ttest_rel(MGDA, PCGRAD).pvalue
    assert p_mgda < p_uniform
    assert rows["mgda"]["p_holm"] == pytest.approx(min(1, 2 * p_mgda))
    assert rows["uniform"]["p_holm"] == pytest.approx(min(1, max(2 * p_mgda, p_uniform)))
    assert verdict["indistinguishable_from_best"] == ["pcgrad", "uniform"]
    assert rows["slgrad"]["final_failures"] == {"diverged": 1, "error": 0, "collapsed": 1}
    # The collapsed seed is a result (it counts, ranked last); the diverged one has no value.
    assert rows["slgrad"]["objective"]["n"] == 1 and rows["slgrad"]["rank"] == 4
    assert rows["slgrad"]["vs_best"] == "untested (< 2 shared seeds)"
    assert rows["mgda"]["objective"]["mean"] == pytest.approx(np.mean(MGDA))


def test_delta_m_per_seed_against_uniform():
    rows = table()["strategies"]
    # Per seed: -100/2 * ((m_left - u_left)/u_left + (m_right - u_right)/u_right), accuracies higher-better.
    expected = [-50 * ((m - u) / u + (0.77 - 0.70) / 0.70) for m, u in zip(MGDA, UNIFORM, strict=True)]
    assert rows["mgda"]["delta_m"]["mean"] == pytest.approx(np.mean(expected))
    assert rows["mgda"]["delta_m"]["n"] == 5
    assert rows["uniform"]["delta_m"]["mean"] == pytest.approx(0.0)


def test_delta_m_against_given_baselines():
    baselines = {"left/accuracy": 0.9, "right/accuracy": 0.8}
    rows = table(baselines=baselines)["strategies"]
    expected = [-50 * ((u - 0.9) / 0.9 + (0.70 - 0.8) / 0.8) for u in UNIFORM]
    assert rows["uniform"]["delta_m"]["mean"] == pytest.approx(np.mean(expected))


def test_minimised_objective_ranks_the_other_way():
    records = [record("a", i, v, 0.0) for i, v in enumerate([0.1, 0.2, 0.15])]
    records += [record("b", i, v, 0.0) for i, v in enumerate([0.5, 0.6, 0.55])]
    assert compute_verdict(records, "min", {"left/accuracy": False})["ranking"] == ["a", "b"]


def test_top_k_candidate_is_chosen_on_validation_not_test():
    records = [record("a", i, 0.9, 0.0, candidate=0, val=0.5) for i in range(3)]  # best test, worse validation
    records += [record("a", i, 0.6, 0.0, candidate=1, val=0.7) for i in range(3)]
    row = compute_verdict(records, "max", HIGHER)["strategies"]["a"]
    assert row["candidate"] == 1 and row["objective"]["mean"] == pytest.approx(0.6)


def test_small_search_warns():
    verdict = table(num_samples=4)
    assert any("no more than TPE's 10 random" in w for w in verdict["warnings"])
    assert any("fewer than 2 finished seeds" in w for w in verdict["warnings"])
    text = verdict_markdown(verdict)
    assert "WARNING" in text and "paired t-test" in text and "Holm" in text
    assert "| 1 | pcgrad |" in text


def test_verdict_dict_is_json_safe():
    import json

    json.dumps(verdict_dict(table()), allow_nan=False)


# -- one trial's history -> one record ---------------------------------------------------------------------
def epoch(n, val, test, left, diverged=None):
    row = {"epoch": n, OBJECTIVE: val, TEST_OBJECTIVE: test, "test/left/accuracy": left}
    if diverged is not None:
        row[DIVERGED] = diverged
    return row


def test_final_record_takes_test_at_the_validation_epoch():
    history = [epoch(1, 0.5, 0.55, 0.55), epoch(2, 0.8, 0.70, 0.70), epoch(3, 0.7, 0.90, 0.90)]
    rec = final_record(history, "max", ["left/accuracy"], strategy="s", candidate=0, seed_index=0, seed=7)
    assert (rec["epoch"], rec["objective"], rec["val_objective"]) == (2, 0.70, 0.8)
    assert rec["metrics"] == {"left/accuracy": 0.70} and rec["status"] == OK
    assert final_record(history, "min", ["left/accuracy"], strategy="s", candidate=0, seed_index=0,
                        seed=7)["epoch"] == 1


def test_final_record_flags_divergence_and_collapse():
    diverged = [epoch(1, 0.5, 0.5, 0.5), epoch(2, math.nan, math.nan, math.nan, diverged=np.bool_(True))]
    rec = final_record(diverged, "max", ["left/accuracy"], strategy="s", candidate=0, seed_index=0, seed=7)
    assert rec["status"] == DIVERGED_STATUS
    chance = [epoch(1, 0.11, 0.11, 0.11)]
    kwargs = dict(strategy="s", candidate=0, seed_index=0, seed=7)
    collapsed = final_record(chance, "max", ["left/accuracy"], chance={"left/accuracy": 0.1}, **kwargs)
    assert collapsed["status"] == COLLAPSED
    assert final_record(chance, "max", ["left/accuracy"], **kwargs)["status"] == OK


def test_final_record_prefers_the_trainables_score_keys():
    from tune_mtl.core.keys import AT_SCORE, SCORE, SCORE_EPOCH

    history = [epoch(1, 0.5, 0.55, 0.55), epoch(2, 0.8, 0.70, 0.70)]
    # The trainable's score says epoch 1 (e.g. its own tie rule): the record follows it, not the history.
    history[-1].update({SCORE: 0.5, SCORE_EPOCH: 1, f"{AT_SCORE}{OBJECTIVE}": 0.5, f"{AT_SCORE}{TEST_OBJECTIVE}": 0.55,
                        f"{AT_SCORE}test/left/accuracy": 0.55})
    rec = final_record(history, "max", ["left/accuracy"], strategy="s", candidate=0, seed_index=0, seed=7)
    assert (rec["epoch"], rec["val_objective"], rec["objective"]) == (1, 0.5, 0.55)
    assert rec["metrics"] == {"left/accuracy": 0.55}


def test_markdown_of_the_json_copy_is_the_same():
    verdict = table(num_samples=4)
    assert verdict_markdown(verdict_dict(verdict)) == verdict_markdown(verdict)
