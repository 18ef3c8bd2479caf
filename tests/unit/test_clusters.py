"""The cluster definitions in clusters/ hold what Ray's autoscaler and Cairn need from them.

No cluster is started: the launcher configs are checked against Ray's own schema (the
ray-schema.json in the installed wheel, found without importing Ray), and the KubeRay manifests
are read the way Ray's KubeRay autoscaler reads a RayCluster (rayStartParams first, then the
container limits) to check that every step Cairn can place has a worker group to scale up.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import REPO

CLUSTERS = REPO / "clusters"
YAMLS = sorted(CLUSTERS.rglob("*.yaml")) + sorted(CLUSTERS.rglob("*.yml"))
CAIRN_ENV = ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "CAIRN_CHECKPOINTS")


# libyaml's loader where PyYAML has it: several times faster on the KubeRay manifests.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_all(path: Path) -> list[Any]:
    """Every document of a YAML file, parsed once per session (callers must not mutate it)."""
    return list(yaml.load_all(path.read_text(), Loader=LOADER))


def load(relative: str) -> dict[str, Any]:
    (doc,) = load_all(CLUSTERS / relative)
    return doc


def ray_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ray")  # locates the package without running its __init__
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def launcher_configs() -> list[Path]:
    """Every cluster-launcher config under clusters/: a YAML with a top-level `provider`."""
    return [p for p in YAMLS if any(isinstance(d, dict) and "provider" in d for d in load_all(p))]


RAYCLUSTER = load("kuberay/raycluster.yaml")
RAYJOB = load("kuberay/rayjob.yaml")
SPEC = RAYCLUSTER["spec"]
GROUPS = {g["groupName"]: g for g in SPEC["workerGroupSpecs"]}


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def quantity(value: str | int) -> int:
    """A Kubernetes CPU or GPU quantity rounded up to whole units, as Ray's autoscaler does."""
    text = str(value)
    return math.ceil(int(text[:-1]) / 1000) if text.endswith("m") else math.ceil(float(text))


def ray_resources(group: dict[str, Any]) -> dict[str, int]:
    """The Ray resources the autoscaler plans one pod of `group` with, before any pod exists.

    Mirrors ray.autoscaler._private.kuberay.autoscaling_config: `num-cpus`/`num-gpus` in
    rayStartParams win over the Ray container's limits; `resources` is a JSON object wrapped in
    quotes with escaped inner quotes ('"{\\"name\\": 1}"'), the format KubeRay passes to
    `ray start --resources`.
    """
    params = group.get("rayStartParams", {})
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    found = {"CPU": quantity(params.get("num-cpus", limits["cpu"]))}
    gpus = params.get("num-gpus", limits.get("nvidia.com/gpu"))
    if gpus is not None:
        found["GPU"] = quantity(gpus)
    if "resources" in params:
        custom = json.loads(params["resources"][1:-1].replace("\\", ""))
        assert all(isinstance(v, int) for v in custom.values()), "Ray wants whole units"
        found.update(custom)
    return found


def fits(request: dict[str, float], offered: dict[str, int]) -> bool:
    return all(offered.get(name, 0) >= amount for name, amount in request.items())


# --- every file ---------------------------------------------------------------------------


def test_the_definitions_are_all_there() -> None:
    names = {p.relative_to(CLUSTERS).as_posix() for p in YAMLS}
    assert {"local.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names
    assert "launcher/aws.yaml" in names
    assert {p.relative_to(CLUSTERS).as_posix() for p in launcher_configs()} >= {
        "local.yaml",
        "launcher/aws.yaml",
    }


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CLUSTERS).as_posix())
def test_every_yaml_parses_into_mappings(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) and d for d in docs), f"{path} holds a non-mapping document"


# --- cluster-launcher configs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path", launcher_configs(), ids=lambda p: p.relative_to(CLUSTERS).as_posix()
)
def test_launcher_config_validates_against_rays_schema(path: Path) -> None:
    (config,) = load_all(path)
    jsonschema.Draft7Validator(ray_schema()).validate(config)
    if "available_node_types" in config:  # what Ray checks beyond the schema at `ray up`
        types = config["available_node_types"]
        assert config["head_node_type"] in types
        assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]


def test_the_schema_check_rejects_a_broken_config() -> None:
    config = load("launcher/aws.yaml")
    validator = jsonschema.Draft7Validator(ray_schema())
    fractional = copy.deepcopy(config)
    fractional["available_node_types"]["gpu-h100"]["resources"]["accelerator_type:H100"] = 0.5
    misspelt = copy.deepcopy(config)
    misspelt["available_node_types"]["cpu"]["max_worker"] = 8
    for broken in (fractional, misspelt):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_aws_has_a_zero_cpu_head_and_cpu_and_h100_workers_that_scale_from_zero() -> None:
    config = load("launcher/aws.yaml")
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["provider"]["cache_stopped_nodes"] is False
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert head["node_config"]["InstanceType"] == "m7i.2xlarge"
    cpu, gpu = types["cpu"], types["gpu-h100"]
    assert (cpu["node_config"]["InstanceType"], cpu["min_workers"], cpu["max_workers"]) == (
        "m7i.8xlarge",
        0,
        8,
    )
    assert gpu["node_config"]["InstanceType"] == "p5.48xlarge" and gpu["min_workers"] == 0
    # Ray's convention: GPUs per node, and one unit of accelerator_type:<type> per node.
    assert gpu["resources"]["GPU"] == 8 and gpu["resources"]["accelerator_type:H100"] == 1
    assert config["max_workers"] == cpu["max_workers"] + gpu["max_workers"]


def test_aws_nodes_run_the_image_with_token_auth_and_the_autoscaler() -> None:
    config = load("launcher/aws.yaml")
    docker = config["docker"]
    assert docker["image"].endswith("-cpu")
    assert config["available_node_types"]["gpu-h100"]["docker"]["worker_image"].endswith("-gpu")
    assert "--env RAY_AUTH_MODE=token" in docker["run_options"]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # Present and empty, so Ray's AWS defaults (pip-installing a nightly Ray) never apply.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert config[key] == [], key
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    port = re.search(r"--head --port=(\d+)", head_start)
    assert port and f"$RAY_HEAD_IP:{port[1]}" in " ".join(config["worker_start_ray_commands"])


def test_local_is_one_machine_like_the_embedded_default() -> None:
    config = load("local.yaml")
    provider = config["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"] == []
    # Ray refuses node types for the local provider; it makes its own single one.
    assert "available_node_types" not in config
    head_start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "--autoscaling-config=" in head_start
    assert "--num-cpus=0" not in head_start  # the head is the whole cluster here
    port = re.search(r"--head --port=(\d+)", head_start)
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert port and f"$RAY_HEAD_IP:{port[1]}" in worker_start
    assert "RAY_AUTH_MODE=token" in worker_start
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


# --- KubeRay manifests -------------------------------------------------------------------


def test_raycluster_runs_the_in_tree_autoscaler() -> None:
    assert (RAYCLUSTER["apiVersion"], RAYCLUSTER["kind"]) == ("ray.io/v1", "RayCluster")
    assert SPEC["enableInTreeAutoscaling"] is True
    options = SPEC["autoscalerOptions"]
    assert isinstance(options["idleTimeoutSeconds"], int) and options["idleTimeoutSeconds"] > 0
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    assert options["version"] == "v2"
    assert {"cpu", "memory"} <= options["resources"]["limits"].keys()


def test_token_auth_guards_the_jobs_api() -> None:
    assert SPEC["authOptions"] == {"mode": "token"}
    major, minor, _ = (int(x) for x in SPEC["rayVersion"].split("."))
    assert (major, minor) >= (2, 52), "Ray token authentication needs Ray 2.52 or later"


def test_head_runs_no_steps_and_serves_the_dashboard_on_the_pod_ip() -> None:
    head = SPEC["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert ray_resources(head)["CPU"] == 0
    (container,) = head["template"]["spec"]["containers"]
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_worker_group_scales_from_zero_within_limits(name: str) -> None:
    group = GROUPS[name]
    assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > 0
    for container in group["template"]["spec"]["containers"]:
        limits = container["resources"]["limits"]
        assert {"cpu", "memory"} <= limits.keys(), f"{name}: the autoscaler reads limits"
        assert container["resources"]["requests"] == limits, f"{name}: Guaranteed QoS"
        if "num-gpus" in group["rayStartParams"]:
            assert str(limits["nvidia.com/gpu"]) == group["rayStartParams"]["num-gpus"]


def test_the_gpu_group_lands_on_h100_nodes_and_offers_h100() -> None:
    assert set(GROUPS) == {"cpu", "gpu-h100"}
    gpu = GROUPS["gpu-h100"]
    pod = gpu["template"]["spec"]
    assert pod["nodeSelector"], "the GPU group needs a nodeSelector for GPU nodes"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert ray_resources(gpu) == {"CPU": 180, "GPU": 8, "accelerator_type:H100": 1}
    cpu = GROUPS["cpu"]
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ray_resources(cpu) == {"CPU": 16}


def test_each_step_shape_has_exactly_the_group_it_should_scale() -> None:
    """Resources as Cairn asks for them (per worker; accelerator_type is 0.001 of a unit)."""
    offered = {"head": ray_resources(SPEC["headGroupSpec"])}
    offered |= {name: ray_resources(group) for name, group in GROUPS.items()}

    def groups_for(request: dict[str, float]) -> set[str]:
        return {name for name, res in offered.items() if fits(request, res)}

    assert groups_for({"CPU": 1}) == {"cpu", "gpu-h100"}
    assert groups_for({"CPU": 16}) == {"cpu", "gpu-h100"}
    assert groups_for({"CPU": 8, "GPU": 8}) == {"gpu-h100"}
    assert groups_for({"CPU": 1, "GPU": 1, "accelerator_type:H100": 0.001}) == {"gpu-h100"}
    assert groups_for({"CPU": 1, "accelerator_type:A100": 0.001}) == set()
    assert groups_for({"CPU": 1, "GPU": 16}) == set()  # must fail fast, not wait


def test_every_container_sees_the_shared_services() -> None:
    for container in containers(SPEC):
        env = {e["name"]: e for e in container["env"]}
        assert set(CAIRN_ENV) <= env.keys(), container["name"]
        secret = env["CAIRN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert secret["name"] and secret["key"]
        assert secret["name"] != RAYCLUSTER["metadata"]["name"], "KubeRay's token Secret"
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
        assert env["CAIRN_STORE"]["value"].startswith("s3://")
        # Checkpoints are a path on a volume every pod mounts (URIs are not supported there).
        assert env["CAIRN_CHECKPOINTS"]["value"].startswith("/mnt/")


def test_images_are_one_cairn_build_on_the_manifests_ray() -> None:
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M)
    assert ray_version and SPEC["rayVersion"] == ray_version[1]
    assert "FROM rayproject/ray:${RAY_VERSION}-py311${VARIANT}" in dockerfile
    assert 'pip install -e "' in dockerfile, "an editable install keeps migrations/ in reach"
    assert "COPY --chown=ray:users migrations migrations" in dockerfile
    images = {c["image"] for c in containers(SPEC)}
    assert {i.rsplit(":", 1)[0] for i in images} == {"registry.example.com/cairn"}
    gpu_image = GROUPS["gpu-h100"]["template"]["spec"]["containers"][0]["image"]
    assert gpu_image.endswith("-gpu") and all(i.endswith("-cpu") for i in images - {gpu_image})
    aws = load("launcher/aws.yaml")
    assert aws["docker"]["image"] in images
    assert aws["available_node_types"]["gpu-h100"]["docker"]["worker_image"] == gpu_image


def test_rayjob_runs_cairn_on_the_same_cluster_and_cleans_up() -> None:
    assert (RAYJOB["apiVersion"], RAYJOB["kind"]) == ("ray.io/v1", "RayJob")
    job = RAYJOB["spec"]
    assert re.fullmatch(r"python -m cairn run \S+\.yaml", job["entrypoint"])
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    assert job["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
    assert job["rayClusterSpec"] == SPEC, "rayjob.yaml's rayClusterSpec drifted from raycluster"
