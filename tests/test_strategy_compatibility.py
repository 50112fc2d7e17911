"""`strategies.check_compatibility`: the checks a search runs before Ray starts. A refusal is one sentence naming
the configuration key; what trains is accepted. (That each refusal is real, i.e. training fails without it, is
checked over every strategy x model in test_models_x_strategies.py.)"""

from __future__ import annotations

import pytest

from tune_mtl import strategies
from tune_mtl.core.errors import UserError


@pytest.mark.parametrize("strategy,knobs,num_tasks,model,options,key", [
    ("slgrad", {}, 1, "mlp", {}, "'strategy: slgrad'"),
    ("gcosim", {}, 1, "resnet18", {}, "at least 2 tasks"),
    ("recon", {"base": "pcgard"}, 3, "mlp", {}, "hyperparameter 'base'"),
    ("recon", {}, 3, "segnet", {}, "'model: segnet'"),
    ("recon", {}, 3, "multilenet", {}, "sequential encoder"),
    ("mgda", {}, 3, "mlp", {"shared_layers": 0}, "'model.shared_layers"),
    ("imtl", {"mode": "hybrid"}, 3, "mlp", {"shared_layers": 0}, "'model.shared_layers"),
    ("gradnorm", {}, 2, "mlp", {"shared_layers": 0}, "'model.shared_layers"),
    ("cagrad", {"alpha": 2.0}, 3, "mlp", {}, "'strategy_knobs.cagrad.alpha'"),
    ("cagrad", {"alpah": 0.5}, 3, "mlp", {}, "'alpah'"),
])
def test_check_compatibility_refuses_with_one_sentence_naming_the_key(strategy, knobs, num_tasks, model, options,
                                                                      key):
    with pytest.raises(UserError) as err:
        strategies.check_compatibility(strategy, knobs, num_tasks, model, options)
    message = str(err.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize("strategy,knobs,num_tasks,model,options", [
    ("uniform", {}, 1, "mlp", {"shared_layers": 0}),
    ("imtl", {"mode": "loss"}, 3, "mlp", {"shared_layers": 0}),  # IMTL-L never looks at a gradient
    ("mgda", {}, 3, "mlp", {}),  # the default shared_layers (3) is filled in
    ("recon", {"base": "PCGrad"}, 3, "mlp", {"shared_layers": 2}),
    ("slgrad", {"lookahead": True}, 2, "resnet18", {}),
    ("nash", {}, 3, "unet", {}),  # aliases resolve
])
def test_check_compatibility_accepts_what_trains(strategy, knobs, num_tasks, model, options):
    strategies.check_compatibility(strategy, knobs, num_tasks, model, options)
