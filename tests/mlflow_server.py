"""Start and stop a real `mlflow server` on 127.0.0.1 for tests of the HTTP path.

Used by the session-scoped ``mlflow_server`` fixture in ``conftest.py``; reusable from
benchmarks or a REPL::

    server = start_mlflow_server(tmp_dir)
    try:
        ...  # MlflowClient(tracking_uri=server.url)
    finally:
        server.stop()

The server uses a sqlite backend and proxies artifacts (``--serve-artifacts``) into a
directory under ``root``; its output, including uvicorn's access log, goes to
``root/server.log`` so that tests can count requests per endpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_ACCESS_LINE = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (/[^ ?"]*)[^"]*" (\d{3})')


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_command() -> list[str]:
    """Run the server from the interpreter running the tests (CI's venv, not PATH's)."""
    script = Path(sys.executable).with_name("mlflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mlflow"]


@dataclass
class MlflowServer:
    """A running `mlflow server` process and where its data and log live."""

    url: str
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def requests(self) -> Counter[tuple[str, str]]:
        """Requests served so far, counted by ``(method, path)``."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return Counter((m.group(1), m.group(2)) for m in _ACCESS_LINE.finditer(text))

    def count(self, path_suffix: str, method: str | None = None) -> int:
        """Requests whose path ends with ``path_suffix`` (and use ``method``, if given)."""
        return sum(
            n
            for (verb, path), n in self.requests().items()
            if path.endswith(path_suffix) and (method is None or verb == method)
        )

    def log_size(self) -> int:
        """Current size of the log, to count only what a test adds after this point."""
        return self.log_path.stat().st_size

    def requests_since(self, offset: int) -> Counter[tuple[str, str]]:
        """Like :meth:`requests`, for log lines written after ``offset`` bytes."""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
        return Counter((m.group(1), m.group(2)) for m in _ACCESS_LINE.finditer(text))

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (its whole group), then kill it if it lingers."""
        if self.process.poll() is not None:
            return
        _signal_group(self.process, "terminate")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, "kill")
            self.process.wait(timeout)


def _signal_group(process: subprocess.Popen[bytes], how: str) -> None:
    # The server runs uvicorn workers as children; they share the process group we
    # created, so signal the group by its id (the server's PID), nothing broader.
    if hasattr(os, "killpg"):
        import signal

        sig = signal.SIGTERM if how == "terminate" else signal.SIGKILL
        try:
            os.killpg(process.pid, sig)
            return
        except ProcessLookupError:
            return
    getattr(process, how)()


def start_mlflow_server(root: Path, *, timeout: float = 90.0) -> MlflowServer:
    """Start a server under ``root`` and wait until ``GET /health`` answers ``OK``.

    Raises:
        RuntimeError: The server exited or did not become healthy within ``timeout``;
            the message ends with the tail of its log.
    """
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [
        *_mlflow_command(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        "1",
    ]
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    server = MlflowServer(url=url, root=root, log_path=log_path, process=process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().decode().strip() == "OK":
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise RuntimeError(f"mlflow server at {url} did not become healthy:\n{tail}")


def remove(server: MlflowServer) -> None:
    """Stop the server and delete its directory."""
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
