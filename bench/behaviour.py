"""Proof that a change which should not alter numerics did not: the quickstart's outputs, hashed.

Runs `workflows/quickstart.yaml` in a fresh CAIRN_HOME (nothing cached) through the `cairn`
command, then records the sha256 of what the run computed:
  - every model's and every checkpoint's weight files (`*.safetensors`),
  - the curated dataset's token shards, packing index, tokenizer and document list,
  - every evaluation's scores (the numbers, not the report bytes),
  - the release bundle's file list (paths, not bytes: manifests hold run ids and times; the
    copies of manifests are named by their digest, so those names are counted, not compared).
Run it before a refactor (`--out before.json`) and after (`--out after.json`), then
`--compare before.json after.json` lists anything that differs. Manifest digests and
fingerprints are not compared: they hash the stage's code, which a move of files changes.

    .venv/bin/python bench/behaviour.py --out bench/results/behaviour-before.json
    .venv/bin/python bench/behaviour.py --compare A.json B.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "workflows" / "quickstart.yaml"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hashes(root: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256(p)
        for pattern in patterns
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


def record(home: Path) -> dict[str, Any]:
    env = {**os.environ, "CAIRN_HOME": str(home)}
    for var in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "RAY_ADDRESS"):
        env.pop(var, None)
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("cairn")), "run", str(QUICKSTART), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"quickstart failed ({done.returncode}):\n{done.stderr[-4000:]}\n{done.stdout}")
    result = json.loads(done.stdout)
    out: dict[str, Any] = {"run_seconds": round(seconds, 1), "steps": {}}
    for name, step in result["steps"].items():
        for output, art in step["artifacts"].items():
            root = Path(art["uri"])
            key = f"{name}.{output}"
            if art["type"] == "model":
                out["steps"][key] = hashes(root, ("*.safetensors", "checkpoints/*/*.safetensors"))
            elif art["type"] == "dataset":
                out["steps"][key] = hashes(
                    root, ("**/*.npy", "**/*.npz", "tokenizer/*", "documents.jsonl")
                )
            elif art["type"] == "eval_report":
                report = json.loads((root / "report.json").read_text())
                out["steps"][key] = report.get("metrics") or report.get("scores")
            elif art["type"] == "release":
                bundle = root / art["metadata"]["bundle"]
                out["steps"][key] = sorted(
                    re.sub(
                        r"/[0-9a-f]{64}\.json$", "/<digest>.json", p.relative_to(bundle).as_posix()
                    )
                    for p in bundle.rglob("*")
                    if p.is_file()
                )
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(a["steps"]) | set(b["steps"])):
        x, y = a["steps"].get(key), b["steps"].get(key)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            for f in sorted(set(x) | set(y)):
                if x.get(f) != y.get(f):
                    diffs.append(f"{key}: {f}: {x.get(f)} != {y.get(f)}")
        elif isinstance(x, list) and isinstance(y, list):
            diffs += [f"{key}: only before: {f}" for f in sorted(set(x) - set(y))]
            diffs += [f"{key}: only after: {f}" for f in sorted(set(y) - set(x))]
        else:
            diffs.append(f"{key}: {x!r} != {y!r}")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, help="write the record here (JSON)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        diffs = compare(a, b)
        files = sum(len(v) for v in a["steps"].values() if isinstance(v, dict | list))
        for d in diffs:
            print(d)
        print(f"{len(a['steps'])} outputs, {files} hashed files or scores: ", end="")
        print("identical" if not diffs else f"{len(diffs)} differences")
        sys.exit(1 if diffs else 0)
    with tempfile.TemporaryDirectory(prefix="cairn-behaviour-") as tmp:
        data = record(Path(tmp) / "home")
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out} (quickstart ran in {data['run_seconds']} s)")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
