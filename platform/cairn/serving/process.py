"""A server as a managed OS process: launch, wait until it answers, stop, read its log.

Every server runs in its own session (so its own process group): vLLM forks an engine-core and a
worker process, and stopping must reach all of them, so `stop` signals the whole group (SIGTERM,
then SIGKILL after a grace period). Output goes to a log file, whose tail is put into every error.

A server meant to outlive its caller (`detach=True`) is started through a short-lived
intermediate process, so that its parent is init rather than the caller: Ray kills the direct
children of a worker process when the worker exits (its log says "Try killing all child
processes of this worker"), which a new session alone does not escape.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cairn.serving.engines import ServingError

# Run by the intermediate of a detached launch: start the server in a new session with its output
# in the log, print its pid, exit. stdin/stdout of the server must not be our pipe, or reading the
# intermediate's output would wait for the server to exit.
_DETACH = """
import json, subprocess, sys
argv, log = json.loads(sys.argv[1]), sys.argv[2]
with open(log, "ab") as out:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
print(p.pid)
"""


@dataclass
class ServerProcess:
    """A launched server: its pid (also its process-group id), log file and, unless detached,
    the Popen that owns it."""

    pid: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after `grace_s`; returns once
        every process of the group is gone (or 5 s after SIGKILL)."""
        if not _signal_group(self.pid, signal.SIGTERM):
            self._reap()
            return
        if not self._wait_group_gone(grace_s):
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_group_gone(5.0)

    def _reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1.0)

    def _wait_group_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self._reap_if_exited()
            if not _signal_group(self.pid, 0):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _reap_if_exited(self) -> None:
        # A dead leader stays a zombie member of its group until its parent (us) reaps it.
        if self.popen is not None:
            self.popen.poll()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group has no process left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as e:
        raise ServingError(f"not allowed to signal process group {pgid}: {e}") from e


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count: it exited and awaits reaping)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The state follows the command name, which is in parentheses and may hold spaces.
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): fall back to a null signal
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def launch(
    argv: list[str], env: dict[str, str], log_path: Path, *, detach: bool = False
) -> ServerProcess:
    """Start `argv` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if detach:
        out = subprocess.run(
            [sys.executable, "-c", _DETACH, json.dumps(argv), str(log_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0 or not out.stdout.strip().isdigit():
            raise ServingError(
                f"could not start {argv[0]} detached (exit {out.returncode}): "
                f"{out.stderr.strip()[-2000:]}"
            )
        return ServerProcess(pid=int(out.stdout.strip()), log_path=log_path)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(pid=popen.pid, log_path=log_path, popen=popen)


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a log file (reads at most `max_bytes` from its end)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# A Python exception line, bare or behind vLLM's "(Worker pid=N) ERROR date time [file:line] ".
_EXCEPTION = re.compile(
    r"^(?:\([^)]*\)\s+ERROR\s+\S+\s+\S+\s+\[[^\]]*\]\s+)?([\w.]+(?:Error|Exception)\b.*)$"
)


def failure_report(path: Path, lines: int = 25) -> str:
    """What to show when a server failed: the first exceptions in its log, then its last lines.

    The first exception is usually the cause: vLLM's workers log the real error (say, a
    SafetensorError) and the API server then dies with a generic "Engine core initialization
    failed. See root cause above", which is all a plain tail would show.
    """
    tail = log_tail(path, lines=100_000, max_bytes=2_000_000).splitlines()
    causes: list[str] = []
    for line in tail:
        match = _EXCEPTION.match(line.strip())
        if match and match.group(1) not in causes:
            causes.append(match.group(1))
    head = ""
    if causes:
        head = (
            "exceptions in the log, first first:\n" + "\n".join(f"  {c}" for c in causes[:4]) + "\n"
        )
    return f"{head}last lines of the log {path}:\n" + "\n".join(tail[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now. Another process may take it before the server binds it;
    the health check then fails with the server's "address in use" in the log tail."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on: the health check would reach that server."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServingError(
                f"port {port} on {host} is in use ({e.strerror}); fix: choose another port, "
                "or port 0 for a free one"
            ) from e


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def get_json(url: str, timeout_s: float = 5.0, api_key: str | None = None) -> tuple[int, object]:
    """GET `url` (with `api_key` as a bearer token); (status, parsed JSON body or None).
    Connection errors raise OSError."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout_s
        ) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        return e.code, None
    try:
        return status, json.loads(body) if body else None
    except json.JSONDecodeError:
        return status, None


def wait_ready(
    proc: ServerProcess,
    base_url: str,
    served_model_name: str,
    *,
    timeout_s: float,
    what: str = "server",
    cancelled: Callable[[], bool] = lambda: False,
    api_key: str | None = None,
) -> float:
    """Wait until `/health` answers 200 and `/v1/models` lists `served_model_name` (asked with
    `api_key`, when the server has one); returns the seconds it took. Raises ServingError with
    the log tail if the process exits, the timeout passes or `cancelled()` turns true (the
    caller stops the process)."""
    start = time.monotonic()
    while True:
        if not proc.alive():
            code = proc.returncode()
            raise ServingError(
                f"the {what} exited{f' with code {code}' if code is not None else ''} before it "
                f"was ready; {failure_report(proc.log_path)}"
            )
        if cancelled():
            raise ServingError(f"cancelled while the {what} was starting")
        try:
            status, _ = get_json(f"{base_url}/health", timeout_s=2.0)
            if status == 200:
                status, models = get_json(f"{base_url}/v1/models", 5.0, api_key)
                if status == 200 and served_model_name in _model_ids(models):
                    return time.monotonic() - start
                if status == 401:
                    raise ServingError(
                        f"the {what} wants an API key other than Cairn's (401 on /v1/models; "
                        "an --api-key among the engine's extra arguments?); fix: give the key "
                        "through Cairn (a serve step's api_key_env; CAIRN_SERVE_API_KEY or "
                        "--api-key-file for cairn serve), not on the engine's command line"
                    )
        except OSError:
            pass  # not listening yet
        if time.monotonic() - start > timeout_s:
            raise ServingError(
                f"the {what} did not answer /health and /v1/models within {timeout_s:.0f} s; "
                f"fix: raise the startup timeout if it is still loading; "
                f"{failure_report(proc.log_path)}"
            )
        time.sleep(0.25)


def _model_ids(listing: object) -> list[str]:
    """The model ids in a `/v1/models` answer ({"data": [{"id": ...}, ...]})."""
    data = listing.get("data") if isinstance(listing, dict) else None
    return [m["id"] for m in data or [] if isinstance(m, dict) and "id" in m]
