import pytest
import torch

from tune_mtl import data, models


@pytest.mark.parametrize("shared_layers,shared_width,task_layers,task_width", [(1, 8, 0, 4), (3, 64, 2, 16)])
def test_hps_parameter_split(shared_layers, shared_width, task_layers, task_width):
    bundle = data.build("toy_regression", {"num_tasks": 3, "input_dim": 10}, seed=0)
    options = dict(shared_layers=shared_layers, shared_width=shared_width, task_layers=task_layers,
                   task_width=task_width)
    model = models.build("mlp", bundle, options)
    shared, tasks = model.shared_parameters(), model.task_parameters()
    ids = [id(p) for p in shared] + [id(p) for ps in tasks for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # disjoint and complete
    assert len(tasks) == 3
    linear_shared = [p for p in shared if p.dim() == 2]
    assert len(linear_shared) == shared_layers
    assert linear_shared[0].shape == (shared_width, 10)
    assert sum(1 for p in tasks[0] if p.dim() == 2) == task_layers + 1
    rep, outs = model(torch.randn(5, 10))
    assert rep.shape == (5, shared_width) and all(o.shape == (5, 1) for o in outs)


def test_each_head_only_touches_its_task():
    bundle = data.build("toy_regression", {"num_tasks": 2, "input_dim": 4}, seed=0)
    model = models.build("mlp", bundle, {})
    _, outs = model(torch.randn(3, 4))
    outs[1].sum().backward()
    assert all(p.grad is None for p in model.task_parameters()[0])
    assert all(p.grad is not None for p in model.task_parameters()[1])
