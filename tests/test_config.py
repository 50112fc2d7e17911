"""Bad input never reaches Ray: exit code 2 and one sentence that names the bad value, no traceback."""

import pytest
import yaml

from tune_mtl.cli import main
from tune_mtl.search.spec import Range, load_spec


def run_cli(capsys, *argv):
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def write(tmp_path, content) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def assert_one_clear_error(rc, err, *needles):
    assert rc == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_unknown_strategy(capsys):
    rc, err = run_cli(capsys, "search", "--strategies", "uniform,pcgard")
    assert_one_clear_error(rc, err, "unknown strategy 'pcgard'", "accepted:", "uniform")


def test_unknown_dataset(tmp_path, capsys):
    rc, err = run_cli(capsys, "--config", write(tmp_path, {"dataset": {"name": "toy_regresion"}}))
    assert_one_clear_error(rc, err, "unknown data set 'toy_regresion'", "did you mean 'toy_regression'", "cifar10")


def test_missing_config_file(capsys):
    rc, err = run_cli(capsys, "--config", "no/such/space.yaml")
    assert_one_clear_error(rc, err, "'no/such/space.yaml' does not exist", "toy.yaml")


def test_malformed_yaml(tmp_path, capsys):
    rc, err = run_cli(capsys, "--config", write(tmp_path, "optimizer:\n  lr: [1, 2\n  beta1: 0.9\n"))
    assert_one_clear_error(rc, err, "is not valid YAML", "line")


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_num_samples(capsys, value):
    rc, err = run_cli(capsys, "search", "--num-samples", value)
    assert_one_clear_error(rc, err, "--num-samples", value)


@pytest.mark.parametrize("lr", [-0.1, {"loguniform": [-1.0, 0.1]}, {"uniform": [0.1, 0.01]}])
def test_negative_or_impossible_learning_rate(tmp_path, capsys, lr):
    rc, err = run_cli(capsys, "--config", write(tmp_path, {"optimizer": {"lr": lr}}))
    assert_one_clear_error(rc, err, "optimizer")


@pytest.mark.parametrize(
    "space,needles",
    [
        ({"optimzer": {"lr": 0.1}}, ["unknown key 'optimzer'", "did you mean 'optimizer'"]),
        ({"training": {"batch_sise": 8}}, ["unknown key 'training.batch_sise'", "did you mean 'batch_size'"]),
        ({"training": {"batch_size": "big"}}, ["'training.batch_size' must be an integer", "'big'"]),
        ({"model": {"shared_layers": {"int": [1.5, 3]}}}, ["shared_layers", "integer"]),
        ({"model": {"shared_width": {"normal": [1, 3]}}}, ["shared_width", "choice"]),
        ({"optimizer": {"name": "lbfgs"}}, ["'optimizer.name' must be one of adam, sgd", "lbfgs"]),
        ({"search": {"scheduler": "pbt2"}}, ["search.scheduler"]),
        ({"strategy_knobs": {"uniform": {"alpha": 0.5}}}, ["unknown key 'strategy_knobs.uniform.alpha'"]),
        ({"strategies": ["nope"]}, ["unknown strategy 'nope'"]),
        ({"dataset": {"name": "toy_regression", "noise": 2.0}}, ["noise", "[0.0, 1.0]"]),
    ],
)
def test_invalid_search_space(tmp_path, capsys, space, needles):
    rc, err = run_cli(capsys, "--config", write(tmp_path, space))
    assert_one_clear_error(rc, err, *needles)


def test_valid_space_and_overrides(tmp_path):
    path = write(tmp_path, {"optimizer": {"lr": {"loguniform": [1.0e-4, 1.0e-1]}, "beta1": 0.9},
                            "strategies": ["EW", "rlw"], "search": {"num_samples": 3}})
    spec = load_spec(path, {"num_samples": 5, "epochs": 7})
    assert spec.strategies == ["uniform", "random"]
    assert spec.search["num_samples"] == 5 and spec.epochs == 7
    assert spec.optimizer["lr"] == Range("loguniform", (1.0e-4, 1.0e-1))
    space = spec.param_space("random")
    assert space["strategy"] == {"name": "random"} and space["optimizer"]["beta1"] == 0.9
    assert space["optimizer"]["lr"].lower == 1.0e-4


def test_listing_commands(capsys):
    import json

    assert main(["strategies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"uniform", "random"} <= names
    assert "rlw" in next(r for r in rows if r["name"] == "random")["aliases"]
    assert main(["datasets"]) == 0
    assert "toy_regression" in capsys.readouterr().out


@pytest.mark.parametrize(
    "seed_name,canonical",
    [("SLgrad", "slgrad"), ("Unif", "uniform"), ("Olaux", "olaux"), ("CAgrad", "cagrad"), ("Gnorm", "gradnorm"),
     ("PCGrad", "pcgrad"), ("gn", "gradnorm"), ("uw", "uw"), ("dwa", "dwa"), ("rlw", "random"), ("mgda", "mgda"),
     ("recon", "recon"), ("nash", "nashmtl"), ("geo", "gls"), ("gsd", "graddrop"), ("imtl", "imtl"),
     ("gvac", "gradvac"), ("moco", "moco"), ("amtl", "aligned-mtl"), ("EW", "uniform")],
)
def test_the_seeds_strategy_names_resolve(seed_name, canonical):
    from tune_mtl import strategies

    assert strategies.resolve(seed_name) == canonical
