"""A GCS emulator (`gcp-storage-emulator`, the [gcs] test dependency) on 127.0.0.1 for the gs:// tests,
and a fault-injecting proxy in front of it.

`emulator` is one server per test session (tensorstore reads its endpoint once per process); each test
makes its own bucket (`new_bucket`). Clients reach it with `client_env()`: STORAGE_EMULATOR_HOST alone
(the project points gcsfs and tensorstore at it) plus settings that keep every Google library off the
network: the metadata server is a closed port on loopback and no credentials file is read.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

# What the project derives from STORAGE_EMULATOR_HOST (mspan_jax/storage.py): unset in the clients'
# environment, so that a test shows the project setting them.
DERIVED = ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "FSSPEC_GCS",
           "EPATH_USE_TF", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
OFFLINE = {"GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "True",
           "GOOGLE_CLOUD_PROJECT": "test", "GCSFS_DEFAULT_PROJECT": "test"}


def free_port() -> int:
    """A loopback TCP port free now (an emulator's, a proxy's or a coordinator's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with STORAGE_EMULATOR_HOST=url, offline Google settings, and none
    of the variables the project derives itself."""
    env = dict(os.environ if base is None else base)
    for key in (*DERIVED, "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(key, None)
    env.update(OFFLINE, STORAGE_EMULATOR_HOST=url)
    return env


class Emulator:
    """A running gcp-storage-emulator process (in memory) at `backend`, reached through a proxy at
    `url` that adds what its downloads lack and tensorstore reads (the object's generation)."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.backend = self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "gcp-storage-emulator"
        self._log = open(log, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--in-memory", "--quiet"], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=client_env(self.url))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b?project=test", timeout=2).read()
                break
            except OSError:
                assert self.proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the GCS emulator did not start in 60 s"
                time.sleep(0.1)
        self._shim = FaultyProxy(self.backend, add_generation=True)
        self.url = self._shim.url

    def new_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (by default with a fresh name); returns the name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        return name

    def stop(self) -> None:
        self._shim.stop()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def serving(log: Path) -> Iterator[Emulator]:
    """A running emulator; this process's environment points at it until the block ends."""
    server = Emulator(log)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(client_env(server.url, saved))
    from mspan_jax import storage

    storage.configure()
    try:
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


class FaultyProxy:
    """An HTTP proxy to `target` on 127.0.0.1 that answers every `every`-th request with 503 itself
    (`every=0`: none), and, once `broken` is set, every write (POST/PUT/PATCH/DELETE) with 403.

    `add_generation`: a download (`alt=media`) gets the `x-goog-generation` header real GCS sends
    (read from the object's metadata); gcp-storage-emulator leaves it out, and tensorstore refuses
    a download without it ("Malformed StorageGeneration")."""

    def __init__(self, target: str, every: int = 0, add_generation: bool = False):
        self.every, self.broken, self.count, self.failed = every, False, 0, 0
        host, port = target.split("://", 1)[1].split(":")
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    proxy.count += 1
                    fail = (503 if proxy.every and proxy.count % proxy.every == 0 else
                            403 if proxy.broken and self.command in ("POST", "PUT", "PATCH", "DELETE")
                            else None)
                    proxy.failed += fail is not None
                if fail is not None:
                    payload = json.dumps({"error": {"code": fail, "message": "injected"}}).encode()
                    self.send_response(fail)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                generation = None
                if add_generation and self.command == "GET" and "alt=media" in self.path \
                        and response.status in (200, 206):
                    path = self.path.replace("alt=media", "alt=json").removeprefix("/download")
                    conn.request("GET", path, headers={"Accept": "application/json"})
                    meta = conn.getresponse()
                    with contextlib.suppress(ValueError):
                        generation = json.loads(meta.read() or b"{}").get("generation")
                self.send_response(response.status)
                if generation is not None:
                    self.send_header("x-goog-generation", str(generation))
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """`python tests/gcs_emulator.py BUCKET...`: the emulator and its proxy, with the buckets, until
    Ctrl-C; prints the STORAGE_EMULATOR_HOST to use (docs/tpu_pod.md, "Rehearse")."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = Emulator(Path(tmp) / "emulator.log")
        try:
            for name in sys.argv[1:]:
                server.new_bucket(name)
            print(f"export STORAGE_EMULATOR_HOST={server.url}", flush=True)
            server.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    main()
