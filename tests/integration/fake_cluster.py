"""Ray's fake multi-node autoscaler (`ray.cluster_utils.AutoscalingCluster`), made safe to run
beside other Ray work on one machine.

Upstream's `start()`/`shutdown()` run `ray stop --force`, which kills every Ray process of the
user (the test session's own Ray included), and always put the GCS on port 6379 (Redis's port on
these machines); its base config file is missing from the wheel. This subclass keeps its config
generation and fake provider, takes `clusters/fake-autoscaling.yaml` as the base config, starts
the head on free ports in a process group of its own, and stops exactly that group.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml
from ray.cluster_utils import AutoscalingCluster

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "clusters" / "fake-autoscaling.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LocalAutoscalingCluster(AutoscalingCluster):
    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        super().__init__(**kwargs)

    def _generate_config(
        self, head_resources: dict, worker_node_types: dict, autoscaler_v2: bool = False, **kw: Any
    ) -> dict:
        config = copy.deepcopy(yaml.safe_load(BASE.read_text()))
        config["available_node_types"] = {
            **worker_node_types,
            "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
        }
        config.update(kw)
        return config

    def start(self, _system_config: Any = None, override_env: dict | None = None) -> None:
        from ray._private.services import get_node_ip_address

        ip = get_node_ip_address()
        port, dashboard = _free_port(), _free_port()
        self.address = f"{ip}:{port}"
        config = copy.deepcopy(self._config)
        config["provider"]["gcs_address"] = self.address
        path = self.workdir / "autoscaling.json"
        path.write_text(json.dumps(config))
        head = dict(self._head_resources)
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--autoscaling-config={path}",
            f"--num-cpus={head.pop('CPU', 0)}",
            "--disable-usage-stats",
        ]
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        self.env = {
            **os.environ,
            **(override_env or {}),
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_FAKE_CLUSTER": "1",
            "RAY_AUTH_MODE": "disabled",
        }
        self.log = self.workdir / "head.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((ip, port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        raise RuntimeError(f"the fake cluster's head did not start: {self.log.read_text()[-2000:]}")

    def shutdown(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 1.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        # Fake nodes are children of the autoscaler's monitor: sweep whatever still serves us.
        for p in psutil.process_iter(["cmdline"]):
            if self.address in " ".join(p.info.get("cmdline") or []):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        self.proc = None
        # `ray start` left this cluster's address for a bare ray.init() to find: take it back.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and self.address in current.read_text():
            current.unlink()

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _COUNT, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return int(out.stdout.strip().splitlines()[-1])


_COUNT = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(sum(n["Alive"] for n in ray.nodes()))
"""
