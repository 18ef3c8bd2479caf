"""Curate's peak memory on two corpus sizes: it must not grow with the corpus.

Builds two corpora of unique documents from the shipped real text (Shakespeare and the Python
docs: passages of ~200 words, each with a seeded share of its words replaced so that no two are
near-duplicates), the second `--factor` times the first, and runs the real curate stage on each
in one Ray session (2 CPUs) while sampling, every 0.1 s:
  - the driver's resident memory (this process runs the stage's driver, as a Ray task would),
  - the sum over Ray's worker processes (`ray::…`) of their resident memory,
  - Ray's object store usage.
Prints the peaks side by side with their ratio; bounded memory means ratios near 1 while the
corpus grows `--factor` times (the driver's per-document bookkeeping, ~40 bytes a document, is
the one part that grows).

    .venv/bin/python bench/curation_memory.py [--docs 20000] [--factor 4] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "workflows" / "data"


def words_of_real_text() -> list[str]:
    text = [json.loads(line)["text"] for line in (DATA / "shakespeare" / "plays.jsonl").open()]
    text += [p.read_text() for p in sorted((DATA / "python-docs").rglob("*.rst"))]
    return " ".join(text).split()


def build(folder: Path, n_docs: int, words: list[str], files: int = 8) -> int:
    """n_docs unique ~200-word passages in `files` JSONL files; returns bytes written."""
    rng = random.Random(n_docs)
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        outs = [
            stack.enter_context(open(folder / f"part-{i:02d}.jsonl", "w")) for i in range(files)
        ]
        for i in range(n_docs):
            start = rng.randrange(len(words) - 200)
            doc = words[start : start + 200]
            for j in rng.sample(range(200), 60):  # 30% replaced: no two are near-copies
                doc[j] = rng.choice(words)
            outs[i % files].write(json.dumps({"text": " ".join(doc) + "."}) + "\n")
    return sum(p.stat().st_size for p in folder.iterdir())


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.driver = self.workers = self.store = 0

    def run(self) -> None:
        import ray

        me = psutil.Process(os.getpid())
        while not self.stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            total = 0
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    cmd = " ".join(p.info["cmdline"] or [])
                    if cmd.startswith("ray::") and p.pid != me.pid:
                        total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.workers = max(self.workers, total)
            try:
                avail = ray.available_resources().get("object_store_memory", 0)
                cap = ray.cluster_resources().get("object_store_memory", 0)
                self.store = max(self.store, int(cap - avail))
            except Exception:  # the session is shutting down
                pass
            time.sleep(0.1)


def curate_once(folder: Path, root: Path) -> dict[str, float]:
    from cairn.stage import ArtifactType, InputArtifact, Resources
    from cairn.stages.curate import SPEC, CurateConfig
    from cairn.testing import local_context

    source = InputArtifact(path=folder, type=ArtifactType.RAW, digest="0" * 64, name=folder.name)
    ctx = local_context(root, resources=Resources(num_workers=2))
    sampler = Sampler()
    sampler.start()
    started = time.monotonic()
    meta = SPEC.run(CurateConfig(vocab_size=2048, seq_len=128), {"sources": [source]}, ctx)
    elapsed = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    ctx.flush()
    d = meta["dataset"]
    return {
        "documents": sum(s["documents_in"] for s in d["sources"].values()),
        "seconds": round(elapsed, 1),
        "driver_peak_mb": round(sampler.driver / 2**20, 1),
        "workers_peak_mb": round(sampler.workers / 2**20, 1),
        "object_store_peak_mb": round(sampler.store / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    words = words_of_real_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.docs, args.docs * args.factor):
            folder = Path(tmp) / f"corpus-{n}"
            size = build(folder, n, words)
            row = curate_once(folder, Path(tmp) / f"run-{n}")
            rows.append({"corpus_mb": round(size / 2**20, 1), **row})
    ray.shutdown()
    small, large = rows
    ratio = {k: round(large[k] / small[k], 2) for k in small if small[k]}
    if args.json:
        print(json.dumps({"runs": rows, "ratio": ratio}, indent=2))
        return
    keys = list(small)
    print(f"{'':24}{'small':>12}{'large':>12}{'ratio':>8}")
    for k in keys:
        print(f"{k:24}{small[k]:>12}{large[k]:>12}{ratio.get(k, float('nan')):>8}")


if __name__ == "__main__":
    main()
