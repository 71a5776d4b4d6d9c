"""moto's ThreadedMotoServer in a process of its own, as "AWS" for the benchmarks.

Its own process so that its work (moto is Python) does not compete for the GIL with what is
measured, and its memory (it holds every uploaded object) is not counted in anyone's RSS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.motosafe import serialize_dynamodb
serialize_dynamodb()  # moto's DynamoDB is not safe for the detector's parallel state calls
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # runs until the parent closes stdin (or dies)
server.stop()
"""

# Credentials and region for talking to moto (never real ones).
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """Start the server; yields the environment that points boto3 at it."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("moto server did not start")
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:  # accepting connections?
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield {"AWS_ENDPOINT_URL": endpoint, **FAKE_AWS}
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def use(env: dict[str, str]) -> None:
    """Point this process's boto3 at the server."""
    os.environ.update(env)
