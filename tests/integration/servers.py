"""Real servers a test starts on a free loopback port and stops after: `cairn server`, and an
S3-compatible object store (moto's server, in its own process)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .conftest import free_port

CAIRN = [sys.executable, "-m", "cairn"]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    first_token: str | None  # printed on stdout when the home had no admin token yet

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@contextlib.contextmanager
def cairn_server(env: dict[str, str], *args: str, port: int | None = None) -> Iterator[Server]:
    """`cairn server` on `port` (default: a free one) with `env` (its CAIRN_HOME), until the
    block ends."""
    port = port or free_port()
    proc = subprocess.Popen(
        [*CAIRN, "server", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, url + "/healthz", 60, lambda: proc.stderr.read() if proc.stderr else "")
        # The first token (if any) is printed before uvicorn starts: it is on stdout by now.
        first = None
        if "--no-auth" not in args:
            line = _ready_line(proc)
            first = line if line.startswith("cairn_") else None
        yield Server(url, proc, first)
    finally:
        stop(proc)


def wait_http(proc: subprocess.Popen, url: str, timeout: float, output: Callable[[], str]) -> None:
    """Until `url` answers; the test fails with the process's `output()` if the process exits
    first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, output()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout:.0f} s"
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a test's process, killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ready_line(proc: subprocess.Popen) -> str:
    """The first line of stdout if one was written (non-blocking: the server keeps running)."""
    import os
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 0.5)
    if not ready:
        return ""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        return (os.read(fd, 4096).decode().splitlines() or [""])[0].strip()
    finally:
        os.set_blocking(fd, True)


def token(env: dict[str, str], name: str, role: str) -> str:
    """A new token made with `cairn token create` (in `env`'s CAIRN_HOME)."""
    p = subprocess.run(
        [*CAIRN, "token", "create", name, "--role", role, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return str(json.loads(p.stdout)["token"])


@contextlib.contextmanager
def s3_server(folder: Path, bucket: str = "cairn") -> Iterator[dict[str, str]]:
    """An S3-compatible server (moto's, over HTTP) with an empty `bucket`, until the block
    ends: yields the environment an S3 client (s3fs, botocore, pyarrow) needs to reach it. The
    keys are moto's own test values, not secrets."""
    port = free_port()
    log_path = folder / "s3-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        try:
            wait_http(proc, f"{url}/moto-api/", 60, log_path.read_text)
            req = urllib.request.Request(f"{url}/{bucket}", method="PUT")  # create the bucket
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200, r.read()
            yield env
        finally:
            stop(proc)
