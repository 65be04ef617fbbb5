"""Responses split into headers and body come at once when quick ACKs are on.

The server here writes a reply the way ``mlflow server`` (uvicorn) does: the headers,
then the body, as two writes on a socket with Nagle's algorithm on. Each check runs in a
fresh interpreter, because the switch wraps a method of ``urllib3``'s connection class.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's"
)

SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    import requests

    def serve(listener):
        conn, _ = listener.accept()  # Nagle stays on, as on the MLflow server's sockets
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
            while b"\\r\\n\\r\\n" in data:
                _, _, data = data.partition(b"\\r\\n\\r\\n")
                conn.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\n")
                conn.sendall(b"OK")

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    session = requests.Session()

    def median_ms():
        times = []
        for _ in range(9):
            began = time.perf_counter()
            assert session.get(url).text == "OK"
            times.append((time.perf_counter() - began) * 1000)
        return sorted(times)[len(times) // 2]

    before = median_ms()
    from inspect_mlflow._writer.quickack import enable_quick_acks
    enabled = [enable_quick_acks(), enable_quick_acks()]
    after = median_ms()
    from urllib3.connection import HTTPConnection, HTTPSConnection
    print(json.dumps({
        "before": before, "after": after, "enabled": enabled,
        "https_wrapped": HTTPSConnection.getresponse is HTTPConnection.getresponse,
    }))
    """
)


def test_a_split_reply_on_a_kept_alive_connection_is_not_held_for_the_delayed_ack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["before"] < 30:
        pytest.skip(f"this kernel does not delay the ACK here ({result['before']:.1f} ms)")
    assert result["enabled"] == [True, True]  # a second call changes nothing
    assert result["https_wrapped"] is True  # TLS connections inherit the wrapper
    # Linux holds the ACK at least 40 ms; acknowledged at once, the body follows in ~1 ms.
    assert result["after"] < 15, result


def test_without_the_option_nothing_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib3.connection import HTTPConnection

    from inspect_mlflow._writer.quickack import enable_quick_acks

    original = HTTPConnection.getresponse
    monkeypatch.delattr(socket, "TCP_QUICKACK")
    assert enable_quick_acks() is False
    assert HTTPConnection.getresponse is original


def test_the_delivery_process_turns_quick_acks_on() -> None:
    script = (
        "from urllib3.connection import HTTPConnection\n"
        "before = HTTPConnection.getresponse\n"
        "from inspect_mlflow._delivery.process import prepare_http\n"
        "prepare_http()\n"
        "print(HTTPConnection.getresponse is not before, "
        "HTTPConnection.getresponse.__wrapped__ is before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "True"]
