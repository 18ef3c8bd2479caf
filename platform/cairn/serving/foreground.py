"""`cairn serve MODEL`: serve a model in the foreground until Ctrl-C.

The CLI resolves MODEL (a path or an artifact digest) to a directory and calls `serve_forever`,
which starts the server, says where it is and how to call it, and stops it cleanly when the user
presses Ctrl-C, the process gets SIGTERM, or the server dies on its own (then with its log tail).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cairn.serving.engines import API_KEY_ENV
from cairn.serving.process import failure_report
from cairn.serving.server import Server, start_server


def usage_text(server: Server) -> str:
    """Where the server is, what runs it, and two ways to call it (curl and openai). A key is
    shown as the variable `$CAIRN_SERVE_API_KEY`, never as itself: this text goes to terminals
    and logs."""
    name = server.served_model_name
    body = json.dumps({"model": name, "prompt": "To be, or not to be", "max_tokens": 32})
    keyed = server.api_key is not None
    python = [
        *(["import os"] if keyed else []),
        "from openai import OpenAI",
        f"client = OpenAI(base_url={server.base_url!r}, "
        + (f"api_key=os.environ[{API_KEY_ENV!r}])" if keyed else "api_key='none')"),
        f"reply = client.chat.completions.create(model={name!r}, "
        "messages=[{'role': 'user', 'content': 'Hello'}], max_tokens=32)",
        "print(reply.choices[0].message.content)",
    ]
    auth = [f'    -H "Authorization: Bearer ${API_KEY_ENV}" \\'] if keyed else []
    engine = server.engine
    return "\n".join(
        [
            f"Serving {server.model_dir}",
            f"  as       {name!r}",
            f"  at       {server.base_url}   (OpenAI-compatible; /v1/models, /v1/completions, "
            "/v1/chat/completions)",
            f"  engine   {engine.name} {engine.version} ({engine.distribution}; {engine.reason})",
            f"  started  in {server.startup_s:.1f} s, pid {server.pid}, log {server.log_path}",
            *([f"  access   API key required (below: ${API_KEY_ENV} holds it)"] if keyed else []),
            "",
            "Try it:",
            f"  curl {server.base_url}/completions -H 'Content-Type: application/json' \\",
            *auth,
            f"    -d {shlex.quote(body)}",
            "",
            *("  " + line for line in python),
            "",
            "Press Ctrl-C to stop the server.",
        ]
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while serving, so `kill` stops the server too (main thread only;
    elsewhere signal handlers cannot be set and the default stays)."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_forever(
    model_dir: str | Path,
    *,
    engine: str = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    echo: Callable[[str], Any] = print,
    **options: Any,
) -> int:
    """Serve `model_dir` until interrupted; returns an exit code (0: stopped by the user, 1: the
    server died). `options` go to `start_server` (api_key, insecure, max_model_len, dtype,
    gpu_memory_utilization, kv_cache_gb, enforce_eager, startup_timeout_s, log_dir,
    extra_args)."""
    echo(f"Starting a server for {model_dir} (engine {engine}) ...")
    with _sigterm_as_interrupt():
        # start_server stops what it started if it fails or is interrupted while starting.
        server = start_server(
            model_dir,
            engine=engine,
            host=host,
            port=port,
            served_model_name=served_model_name,
            **options,
        )
        try:
            echo(usage_text(server))
            while server.alive():
                time.sleep(0.5)
            echo("The server exited on its own.")
            echo(failure_report(server.log_path))
            return 1
        except KeyboardInterrupt:
            echo("Stopping the server ...")
            return 0
        finally:
            server.stop()
