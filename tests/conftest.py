"""Shared fixtures: one Ray instance for the whole session (Ray start costs ~5 s and ~1 GB)."""

from __future__ import annotations

import os

import pytest

# Ray Train V2 polls workers every 2 s by default, which makes each report() block that long.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance (2 CPUs), started once per test session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
