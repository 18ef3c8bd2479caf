"""Whether a step's resources can ever be scheduled on a cluster's node types (read from the
files in clusters/), what a step asks for, and the elastic worker range in workflows."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cairn.engine.cluster import NodeType, from_config_file, infeasible, request_text, worker_shape
from cairn.errors import StageError
from cairn.stage import Resources
from tests import REPO


def test_worker_shape_per_launcher() -> None:
    res = Resources(
        num_workers=4, cpus_per_worker=8, gpus_per_worker=1, memory_gb=32, accelerator_type="H100"
    )
    shape, need = worker_shape(res, "trainer")
    assert need == 4
    assert shape == {"CPU": 8, "GPU": 1, "memory": 32 * 2**30, "accelerator_type:H100": 0.001}
    task, one = worker_shape(res, "task")  # one Ray task holding every worker's share
    assert one == 1 and task["CPU"] == 32 and task["GPU"] == 4
    assert worker_shape(res, "driver") == ({"CPU": 1.0}, 1)
    elastic = Resources(num_workers="2..8", cpus_per_worker=1)
    assert worker_shape(elastic, "trainer")[1] == 2  # it starts once min fit
    assert request_text(elastic, "trainer") == "2..8 × {CPU 1} (Ray Train workers)"


def test_launcher_config_node_types_decide_feasibility() -> None:
    types = from_config_file(REPO / "clusters" / "launcher" / "aws.yaml")
    by_name = {t.name: t for t in types}
    assert by_name["gpu-h100"].resources["GPU"] == 8 and by_name["gpu-h100"].max_count == 4
    h100 = Resources(num_workers=16, cpus_per_worker=8, gpus_per_worker=1, accelerator_type="H100")
    assert infeasible(h100, "trainer", types, "pretrain") is None
    too_many = h100.model_copy(update={"num_workers": 64})
    why = infeasible(too_many, "trainer", types, "pretrain")
    assert why and "needs 64 worker(s)" in why and "at most 32 fit" in why
    a100 = h100.model_copy(update={"accelerator_type": "A100"})
    why = infeasible(a100, "trainer", types, "pretrain")
    assert why and "no node type of this cluster has that" in why
    assert "accelerator_type:A100" in why and "fix:" in why


def test_kuberay_manifest_node_types() -> None:
    types = from_config_file(REPO / "clusters" / "kuberay" / "raycluster.yaml")
    gpu = next(t for t in types if t.resources.get("GPU"))
    assert gpu.resources["GPU"] == 8 and gpu.resources.get("accelerator_type:H100") == 1
    assert infeasible(Resources(num_workers=1, gpus_per_worker=16), "trainer", types, "x")
    assert infeasible(Resources(num_workers=2, gpus_per_worker=8), "trainer", types, "x") is None
    job = from_config_file(REPO / "clusters" / "kuberay" / "rayjob.yaml")
    assert sorted((t.name, t.max_count) for t in job) == sorted(
        (t.name, t.max_count) for t in types
    )


def test_a_fixed_cluster_counts_its_nodes() -> None:
    types = [NodeType("a", {"CPU": 2.0, "memory": 8 * 2**30}, 1)]
    assert infeasible(Resources(num_workers=2, cpus_per_worker=1), "trainer", types, "s") is None
    why = infeasible(Resources(num_workers=3, cpus_per_worker=1), "trainer", types, "s")
    assert why and "at most 2 fit" in why and "'2..3'" in why
    assert infeasible(Resources(memory_gb=16), "task", types, "s")  # 16 GiB > the node's 8
    assert infeasible(Resources(cpus_per_worker=0), "task", types, "s") is None  # asks nothing


def test_unknown_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(ValueError, match="neither a cluster-launcher config"):
        from_config_file(bad)


def test_num_workers_range() -> None:
    r = Resources(num_workers="2..8")
    assert (r.min_workers, r.num_workers, r.elastic, r.workers_text()) == (2, 8, True, "2..8")
    assert not Resources(num_workers="4..4").elastic
    with pytest.raises(ValidationError, match="min exceeds max"):
        Resources(num_workers="8..2")
    with pytest.raises(ValidationError, match="two whole numbers"):
        Resources(num_workers="two..8")


def test_elastic_batch_must_divide_every_group_size(tmp_path: Path) -> None:
    from cairn.stages.pretrain import PretrainConfig
    from cairn.stages.pretrain.data import DatasetInfo, check_batch

    data = DatasetInfo(tmp_path, 16, 300, None, 1, None, (), (), 1000, 10)
    check_batch(PretrainConfig(global_batch_size=12), data, Resources(num_workers="2..4"))
    with pytest.raises(StageError, match=r"multiple of 12 \(e\.g\. 24\)"):
        check_batch(PretrainConfig(global_batch_size=16), data, Resources(num_workers="2..4"))
