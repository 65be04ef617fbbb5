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
    command: list[str] | None = None
    """How it was started (to start it again on the same port and store)."""
    env: dict[str, str] | None = None

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash: no shutdown, no flush)."""
        if self.process.poll() is None:
            _signal_group(self.process, "kill")
            self.process.wait(10)

    def restart(self, *, timeout: float = 90.0) -> None:
        """Start the server again on the same port and store (after :meth:`kill`/`stop`)."""
        assert self.command is not None, "started without start_mlflow_server"
        self.stop()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self.env,
                start_new_session=True,
            )
        _wait_healthy(self, timeout)

    def requests(self) -> Counter[tuple[str, str]]:
        """Requests served so far, counted by ``(method, path)``."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return Counter((m.group(1), m.group(2)) for m in _ACCESS_LINE.finditer(text))

    def responses(self) -> Counter[tuple[str, str, int]]:
        """Requests served so far, counted by ``(method, path, status code)``."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return Counter(
            (m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS_LINE.finditer(text)
        )

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


def start_mlflow_server(
    root: Path,
    *,
    timeout: float = 90.0,
    port: int | None = None,
    app_name: str | None = None,
    extra_env: dict[str, str] | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int = 1,
) -> MlflowServer:
    """Start a server under ``root`` and wait until ``GET /health`` answers ``OK``.

    Args:
        root: Directory for the store, the artifacts and the log.
        timeout: Seconds to wait for it to become healthy.
        port: Port to listen on (default: a free one).
        app_name: ``--app-name`` (for example ``basic-auth``).
        extra_env: Variables for the server process (for example auth settings).
        backend_store_uri: Where runs are stored (default: a sqlite file under ``root``).
        artifacts_destination: Where served artifacts go (default: ``root/artifacts``).
        workers: Server worker processes.

    Raises:
        RuntimeError: The server exited or did not become healthy within ``timeout``;
            the message ends with the tail of its log.
    """
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    port = port or free_port()
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
        backend_store_uri or f"sqlite:///{root / 'server.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination or str(artifacts),
        "--workers",
        str(workers),
    ]
    if app_name:
        command += ["--app-name", app_name]
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    server = MlflowServer(
        url=url, root=root, log_path=log_path, process=process, command=command, env=env
    )
    _wait_healthy(server, timeout)
    return server


def _wait_healthy(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.read().decode().strip() == "OK":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    tail = server.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise RuntimeError(f"mlflow server at {server.url} did not become healthy:\n{tail}")


def remove(server: MlflowServer) -> None:
    """Stop the server and delete its directory."""
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
