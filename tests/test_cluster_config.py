"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema and checks), in both variants."""

import copy
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
LOCAL_MARKER = "# provider:\n#   type: local"


def aws_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def local_config() -> dict:
    """The commented on-premise variant, uncommented and put in place of the cloud keys."""
    text = CLUSTER_YAML.read_text()
    block = text[text.index(LOCAL_MARKER):]
    local = yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else "" for line in block.splitlines()))
    return {**aws_config(), **local}


def check(config: dict) -> dict:
    validate_config(copy.deepcopy(config))  # the file as written
    full = prepare_config(copy.deepcopy(config))  # with Ray's provider defaults filled in, as `ray up` does
    validate_config(full)
    return full


def test_aws_cluster_yaml_passes_rays_schema():
    full = check(aws_config())
    assert full["provider"]["type"] == "aws"
    head = full["available_node_types"][full["head_node_type"]]
    workers = full["available_node_types"]["gpu_worker"]
    assert head["resources"]["CPU"] == 0 and workers["resources"]["GPU"] >= 1
    assert workers["min_workers"] >= 1, "launch.py checks --gpus-per-trial against a running GPU node"
    setup = " ".join(full["setup_commands"])
    assert "make venv" in setup, "nodes install the project the way the README does"


def test_local_provider_variant_passes_rays_schema():
    full = check(local_config())
    assert full["provider"]["type"] == "local" and full["provider"]["worker_ips"]
