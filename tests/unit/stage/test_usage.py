"""Compute accounting: a meter sees this process's CPU time and memory, and a step's totals are
allocations (wall × what each worker held) beside what was used."""

from __future__ import annotations

import time

import numpy as np

from cairn.stage.usage import Meter, add, human_bytes, summarise


def test_meter_sees_cpu_time_and_a_memory_peak() -> None:
    meter = Meter("worker", cpus=2, gpus=0, rank=1, interval=0.05)
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn ~0.3 s of CPU
        pass
    before = meter.snapshot()["peak_rss_bytes"]
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    time.sleep(0.2)
    del block
    rec = meter.stop()
    assert rec["role"] == "worker" and rec["rank"] == 1 and rec["cpus"] == 2
    assert rec["cpu_time_s"] >= 0.25
    assert rec["wall_s"] >= rec["cpu_time_s"] - 0.05
    assert rec["peak_rss_bytes"] >= before + 48 * 2**20  # the freed block still counts


def test_summarise_charges_what_was_held() -> None:
    records = [
        {
            "worker": "h:1",
            "role": "driver",
            "rank": None,
            "wall_s": 100.0,
            "cpu_time_s": 2.0,
            "cpus": 0,
            "gpus": 0,
            "peak_rss_bytes": 500,
        },
        {
            "worker": "h:2",
            "role": "worker",
            "rank": 0,
            "wall_s": 90.0,
            "cpu_time_s": 80.0,
            "cpus": 4,
            "gpus": 1,
            "peak_rss_bytes": 3000,
        },
        {
            "worker": "h:3",
            "role": "worker",
            "rank": 1,
            "wall_s": 30.0,
            "cpu_time_s": 25.0,
            "cpus": 4,
            "gpus": 1,
            "peak_rss_bytes": 2000,
        },  # died and was replaced
        {
            "worker": "h:4",
            "role": "worker",
            "rank": 1,
            "wall_s": 60.0,
            "cpu_time_s": 50.0,
            "cpus": 4,
            "gpus": 1,
            "peak_rss_bytes": 2500,
        },
    ]
    u = summarise(records)
    assert u["worker_seconds"] == 180.0  # the zero-resource driver holds nothing
    assert u["cpu_seconds"] == 720.0
    assert u["gpu_seconds"] == 180.0
    assert u["cpu_time_seconds"] == 157.0
    assert u["peak_rss_bytes"] == 3000
    assert [w["worker"] for w in u["workers"]] == ["h:1", "h:2", "h:3", "h:4"]
    totals = add(add({}, u), {"worker_seconds": 20, "cpu_seconds": 20})
    assert totals["worker_seconds"] == 200.0 and totals["gpu_seconds"] == 180.0
    assert add({}, None) == {
        "worker_seconds": 0.0,
        "cpu_seconds": 0.0,
        "gpu_seconds": 0.0,
        "cpu_time_seconds": 0.0,
    }


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 2**30) == "3 GiB"
