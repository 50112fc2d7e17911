"""A strategy's own range for a shared key (`per_strategy:` in a search space): parsing and its errors, the
spaces that sample it (separate and categorical), the paired start-up carried into the own range, the
disclosure, and a real small search in which only that strategy's trials draw from it.

References are independent of the code under test: Optuna's own RandomSampler (what a start-up draw is),
scipy's distributions and closed-form cell probabilities, and hand-computed quantiles."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from scipy import stats

from tune_mtl.core.errors import UserError
from tune_mtl.reporting.own_ranges import disclosure_lines, own_ranges
from tune_mtl.search.categorical_space import StrategyChoiceSpace, StrategySpace, fixed_space, paired_draws
from tune_mtl.search.plan import paired_draws_seed, plan_notes
from tune_mtl.search.searcher import Objectives, StudySearcher, StudySetup
from tune_mtl.search.spec import Range, load_spec
from tune_mtl.search.unit_cube import position, value_at

SHARED_LR = (1.0e-2, 1.0e-1)
OWN_LR = (1.0e-4, 1.0e-3)  # disjoint from the shared range: a leak either way shows
TINY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": {"choice": [8, 16, 32]}},
    "optimizer": {"name": "adam", "lr": {"loguniform": list(SHARED_LR)}, "beta1": 0.9},
    "training": {"batch_size": {"choice": [16, 32, 64]}, "epochs": 1},
    "strategies": ["uniform", "slgrad"],
    "per_strategy": {"slgrad": {"optimizer": {"lr": {"loguniform": list(OWN_LR)}}}},
}


def spec_of(tmp_path: Path, **changes):
    raw = {**TINY, **changes}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def optuna_draws(value_range: Range, count: int, seed: int = 0) -> list:
    """What Optuna's RandomSampler draws from the range (the start-up of a study)."""
    from tune_mtl.search.categorical_space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [suggest(study.ask(), "x", value_range) for _ in range(count)]


# -- unit_cube: carrying a draw from one range to another ------------------------------------------------------
@pytest.mark.parametrize("value_range", [
    Range("uniform", (-2.0, 3.0)), Range("loguniform", (1.0e-4, 1.0e-2)), Range("int", (1, 6)),
    Range("logint", (1, 64)), Range("choice", (16, 32, 64, 128)),
])
def test_a_random_draws_position_is_uniform(value_range):
    """Positions of Optuna's own random draws (a discrete one jittered within its cell) are U(0, 1): that is
    what makes the carried start-up a random draw of the own range."""
    jitter = np.random.default_rng(1).random(3000)
    where = [position(value_range, v, j) for v, j in zip(optuna_draws(value_range, 3000), jitter, strict=True)]
    assert stats.kstest(where, "uniform").pvalue > 1e-3


def test_a_uniform_position_lands_like_a_random_draw_of_the_target_range():
    u = np.random.default_rng(2).random(4000)
    lrs = [value_at(Range("loguniform", (5.0e-4, 4.0e-3)), x) for x in u]
    assert stats.kstest(lrs, stats.loguniform(5.0e-4, 4.0e-3).cdf).pvalue > 1e-3
    assert min(lrs) >= 5.0e-4 and max(lrs) <= 4.0e-3
    # logint: Optuna's cells are [k - 1/2, k + 1/2] on the log scale, so P(k) = log((k + .5) / (k - .5)) / log(...)
    ints = np.array([value_at(Range("logint", (1, 8)), x) for x in u])
    expected = np.array([math.log((k + 0.5) / (k - 0.5)) for k in range(1, 9)]) / math.log(8.5 / 0.5)
    counts = np.array([(ints == k).sum() for k in range(1, 9)])
    assert stats.chisquare(counts, expected * len(u)).pvalue > 1e-3
    choices = [value_at(Range("choice", ("a", "b", "c")), x) for x in u]
    assert stats.chisquare([choices.count(c) for c in "abc"]).pvalue > 1e-3


def test_a_carried_draw_keeps_its_quantile():
    shared, own = Range("loguniform", (1.0e-4, 1.0e-2)), Range("loguniform", (5.0e-4, 4.0e-3))
    for lr in (1.0e-4, 1.0e-3, 3.7e-3, 1.0e-2):
        quantile = math.log(lr / 1.0e-4) / math.log(100)  # by hand: log-uniform CDF
        assert value_at(own, position(shared, lr, 0.0)) == pytest.approx(5.0e-4 * 8**quantile, rel=1e-12)
    # batch 128 of [32, 64, 128, 256] is the third quarter, which is the upper half of [32, 64]
    assert all(value_at(Range("choice", (32, 64)), position(Range("choice", (32, 64, 128, 256)), 128, j)) == 64
               for j in (0.0, 0.5, 0.999))


# -- parsing -----------------------------------------------------------------------------------------------
def test_own_values_parse_resolve_aliases_and_survive_the_saved_copy(tmp_path):
    spec = spec_of(tmp_path, per_strategy={"SL-Grad": {"optimizer": {"lr": {"loguniform": list(OWN_LR)}},
                                                       "training": {"batch_size": 8}}})
    assert spec.per_strategy == {"slgrad": {"optimizer": {"lr": Range("loguniform", OWN_LR)},
                                            "training": {"batch_size": 8}}}
    assert spec.section("optimizer", "slgrad")["lr"] == Range("loguniform", OWN_LR)
    assert spec.section("optimizer", "uniform")["lr"] == Range("loguniform", SHARED_LR)
    assert spec.param_space("slgrad")["training"]["batch_size"] == 8
    saved = tmp_path / "saved.yaml"  # what --resume reads back
    saved.write_text(yaml.safe_dump(spec.describe()))
    assert load_spec(saved).per_strategy == spec.per_strategy
    # a strategy outside the search is checked, not kept
    assert spec_of(tmp_path, strategies=["uniform", "cagrad"]).per_strategy == {}


@pytest.mark.parametrize(("per_strategy", "message"), [
    ({"slgard": {"optimizer": {"lr": 0.1}}}, r"'per_strategy\.slgard'.*slgrad"),
    ({"slgrad": {"model": {"shared_width": 8}}}, r"'per_strategy\.slgrad\.model'.*optimizer, training"),
    ({"slgrad": {"optimizer": {"lrr": 0.1}}}, r"'per_strategy\.slgrad\.optimizer\.lrr'.*did you mean 'lr'"),
    ({"slgrad": {"optimizer": {"lr": {"loguniform": [1.0e-3, 1.0e-4]}}}},
     r"'per_strategy\.slgrad\.optimizer\.lr\.loguniform' needs low < high"),
    ({"slgrad": {"optimizer": {"lr": {"loguniform": [1.0e-3, 100]}}}}, r"per_strategy\.slgrad\.optimizer.*lr"),
    ({"slgrad": {"training": {"epochs": 3}}}, r"'per_strategy\.slgrad\.training\.epochs' cannot differ"),
    ({"slgrad": {"training": {"batch_size": {"int": [0, 4]}}}}, r"per_strategy\.slgrad\.training.*batch_size"),
    ({"slgrad": 0.1}, r"'per_strategy\.slgrad' must map sections"),
    ([1, 2], r"'per_strategy' must map strategy names"),
    ({"slgrad": {"optimizer": {"lr": 0.1}}, "sl-grad": {"optimizer": {"lr": 0.2}}}, r"twice"),
])
def test_a_bad_own_value_is_one_sentence_naming_the_key(tmp_path, per_strategy, message):
    with pytest.raises(UserError, match=message) as caught:
        spec_of(tmp_path, per_strategy=per_strategy)
    assert "\n" not in str(caught.value)


def test_pbt_refuses_own_ranges_and_the_plan_discloses_them(tmp_path):
    with pytest.raises(UserError, match="'per_strategy' ranges need asha"):
        plan_notes(spec_of(tmp_path, search={"scheduler": "pbt"}))
    notes = plan_notes(spec_of(tmp_path))
    assert notes[0].startswith("slgrad searched its own optimizer.lr loguniform [0.0001, 0.001] "
                               "(the others: loguniform [0.01, 0.1])") and "unequal tuning" in notes[0]
    assert any("paired start-up" in n for n in notes)
    assert disclosure_lines(own_ranges(spec_of(tmp_path, per_strategy={}).describe())) == []


def test_the_summary_discloses_own_ranges_read_from_the_run_folder(tmp_path):
    from tune_mtl.reporting.own_ranges import saved_own_ranges
    from tune_mtl.reporting.summary import format_table

    (tmp_path / "search_space.yaml").write_text(yaml.safe_dump(spec_of(tmp_path).describe()))  # as a run saves it
    own = saved_own_ranges(tmp_path)
    assert own == {"slgrad": {"optimizer.lr": {"own": {"loguniform": list(OWN_LR)},
                                               "shared": {"loguniform": list(SHARED_LR)}}}}
    table = format_table({"objective": {"mode": "min"}, "strategies": {}, "own_ranges": own, "run_dir": "x"})
    assert ("- slgrad searched its own optimizer.lr loguniform [0.0001, 0.001] (the others: loguniform [0.01, 0.1]); "
            "unequal tuning") in table
    assert saved_own_ranges(tmp_path / "no_run") == {}


# -- the spaces -------------------------------------------------------------------------------------------
def sample(space, count: int, seed: int = 0) -> list[tuple[dict, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask()
        out.append((space(trial), dict(trial.params)))
    return out


def inside(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def test_each_strategys_study_samples_its_own_range_and_gets_its_fixed_values(tmp_path):
    spec = spec_of(tmp_path, per_strategy={"slgrad": {"optimizer": {"lr": {"loguniform": list(OWN_LR)},
                                                                    "beta1": 0.5}}})
    for config, _ in sample(StrategySpace(spec, "slgrad"), 40):
        assert inside(config["optimizer"]["lr"], OWN_LR) and config["optimizer"]["beta1"] == 0.5
    for config, _ in sample(StrategySpace(spec, "uniform"), 40):
        assert inside(config["optimizer"]["lr"], SHARED_LR) and "beta1" not in config["optimizer"]
    assert fixed_space(spec)["optimizer"]["beta1"] == 0.9  # the others' value, merged under the suggestion


def test_categorical_mode_samples_an_own_range_only_for_its_strategy(tmp_path):
    spec = spec_of(tmp_path, search={"strategy_mode": "categorical"})
    drawn = sample(StrategyChoiceSpace(spec), 60)
    for config, params in drawn:
        if config["strategy"]["name"] == "slgrad":
            assert inside(config["optimizer"]["lr"], OWN_LR) and "slgrad/optimizer/lr" in params
            assert "optimizer/lr" not in params
        else:
            assert inside(config["optimizer"]["lr"], SHARED_LR) and "slgrad/optimizer/lr" not in params
    assert {c["strategy"]["name"] for c, _ in drawn} == {"uniform", "slgrad"}


def searcher(spec, tmp_path: Path, budget: int, startup: int) -> StudySearcher:
    """As the engine builds it for a paired search: each study starts from its paired draws."""
    setups = [StudySetup(s, s, StrategySpace(spec, s), budget, 0, startup, False,
                         paired_draws(spec, startup, paired_draws_seed(spec), s)) for s in spec.strategies]
    return StudySearcher(setups, f"sqlite:///{tmp_path / 'optuna.db'}", Objectives(["score"], ["min"], ["x"]),
                         "/runs/x/trials", "x")


def test_paired_start_up_carries_each_draw_to_the_same_quantile_of_the_own_range(tmp_path):
    spec = spec_of(tmp_path, per_strategy={"slgrad": {"optimizer": {"lr": {"loguniform": list(OWN_LR)}},
                                                      "training": {"batch_size": {"choice": [4, 8]}}}})
    startup = 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns about an enqueued value outside its distribution
        the_searcher = searcher(spec, tmp_path, budget=startup, startup=startup)
        configs = [the_searcher.suggest(f"t{i}") for i in range(2 * startup)]
    uniform = [c for c in configs if c["strategy"]["name"] == "uniform"]
    slgrad = [c for c in configs if c["strategy"]["name"] == "slgrad"]
    for u, s in zip(uniform, slgrad, strict=True):
        assert s["model"] == u["model"], "a key neither overrides is the same draw"
        quantile = math.log(u["optimizer"]["lr"] / SHARED_LR[0]) / math.log(SHARED_LR[1] / SHARED_LR[0])
        assert s["optimizer"]["lr"] == pytest.approx(OWN_LR[0] * (OWN_LR[1] / OWN_LR[0]) ** quantile, rel=1e-9)
        # batch 16 of [16, 32, 64] is the first third: the lower half of [4, 8]; 64 the upper half
        assert {16: [4], 32: [4, 8], 64: [8]}[u["training"]["batch_size"]].count(s["training"]["batch_size"]) == 1
    unpaired = spec_of(tmp_path, search={"paired_startup": False})
    assert plan_notes(unpaired) and not any("paired start-up" in n for n in plan_notes(unpaired))


def test_a_key_the_others_fix_gets_a_position_shared_by_the_strategies_that_range_over_it(tmp_path):
    own_beta = {"optimizer": {"beta1": {"uniform": [0.5, 0.7]}}}
    spec = spec_of(tmp_path, strategies=["uniform", "slgrad", "cagrad"],
                   per_strategy={"slgrad": own_beta, "cagrad": {"optimizer": {"beta1": {"uniform": [0.0, 0.2]}}}})
    seed = paired_draws_seed(spec)
    slgrad = [d["optimizer/beta1"] for d in paired_draws(spec, 6, seed, "slgrad")]
    cagrad = [d["optimizer/beta1"] for d in paired_draws(spec, 6, seed, "cagrad")]
    assert all("optimizer/beta1" not in d for d in paired_draws(spec, 6, seed, "uniform"))
    assert all(inside(b, (0.5, 0.7)) for b in slgrad) and all(inside(b, (0.0, 0.2)) for b in cagrad)
    np.testing.assert_allclose(np.array(slgrad) - 0.5, np.array(cagrad), atol=1e-12)  # the same positions
    assert len(set(slgrad)) == 6


# -- a real search -------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_only_that_strategys_trials_draw_from_its_own_range(tmp_path, ray_session, capsys):
    from tune_mtl.cli import main

    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump({**TINY, "search": {"num_samples": 4, "seed": 1, "scheduler": "fifo"}}))
    rc = main(["search", "--config", str(config), "--storage-path", str(tmp_path), "--name", "own",
               "--final-seeds", "0", "--wandb-mode", "disabled", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "note: slgrad searched its own optimizer.lr loguniform [0.0001, 0.001]" in out
    lrs: dict[str, list[float]] = {}
    for folder in (d for d in (tmp_path / "own" / "trials").iterdir() if (d / "result.json").is_file()):
        last = json.loads((folder / "result.json").read_text().splitlines()[-1])
        lrs.setdefault(last["config"]["strategy"]["name"], []).append(last["config"]["optimizer"]["lr"])
    assert sorted(map(len, lrs.values())) == [4, 4], "the same budget"
    assert all(inside(lr, OWN_LR) for lr in lrs["slgrad"]) and all(inside(lr, SHARED_LR) for lr in lrs["uniform"])
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert set(summary["own_ranges"]) == {"slgrad"}
    assert "- slgrad searched its own optimizer.lr" in (tmp_path / "own" / "summary.md").read_text()
