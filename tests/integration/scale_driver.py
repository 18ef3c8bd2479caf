"""`cairn run` for the autoscaling test, with the test's stage kind registered: run in a process
of its own, because this one connects to the fake cluster (RAY_ADDRESS) and pytest's process
holds the session's local Ray."""

from __future__ import annotations

import json
import sys

import tests.integration.scale_stages  # noqa: F401  (registers its kind)
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.workflow import load_workflow

result = Engine(Settings.from_env()).run(load_workflow(sys.argv[1]))
print(json.dumps({"run_id": result.run_id, "state": result.state}))
