"""A real S3 API on 127.0.0.1 for tests: moto's server, nothing leaves the machine.

:class:`S3Server` records every request it serves (method, key, query) and can be stopped and started again on
the same port, its buckets kept (moto keeps them in this process), so a test can cut the store off mid-run as an
outage does and bring it back.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from garmentcv.infer.sources import bucket_filesystem


class S3Server:
    """moto's S3 API on a free port of 127.0.0.1.

    Attributes:
        requests: ``(method, path, query)`` of every request served, e.g. ``("GET", "/shop/a/x.jpg", "")``
            (path URL-decoded).
        endpoint: ``http://127.0.0.1:PORT`` (the same after a restart).
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.app = DomainDispatcherApplication(create_backend_app)
        self.requests: list[tuple[str, str, str]] = []
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self._lock:
            self.requests.append((environ["REQUEST_METHOD"], unquote(environ.get("PATH_INFO", "")),
                                  environ.get("QUERY_STRING", "")))
        return self.app(environ, start_response)

    def start(self) -> None:
        """Serve (again) on :attr:`port` (a free one the first time)."""
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        connections, lock = self._connections, self._lock

        class Handler(MotoRequestHandler):  # tracks kept-alive connections, so that stop() can cut them
            def setup(self) -> None:
                super().setup()
                with lock:
                    connections.add(self.connection)

            def finish(self) -> None:
                with lock:
                    connections.discard(self.connection)
                super().finish()

        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True, request_handler=Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop as a dead store does: the port refuses connections and open ones are cut."""
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def object_requests(self, bucket: str, key: str) -> list[str]:
        """The methods of the requests made for one object, in order."""
        with self._lock:
            return [method for method, path, _ in self.requests if path == f"/{bucket}/{key}"]


@contextlib.contextmanager
def moto_s3(env: pytest.MonkeyPatch, tmp: Path) -> Iterator[S3Server]:
    """Start an :class:`S3Server` with no buckets (moto's state, shared by the process, is reset) and point the
    AWS environment at it (fake credentials, no config files, ``AWS_ENDPOINT_URL``); yields the server. Everything
    is undone on exit."""
    from urllib.request import Request, urlopen

    server = S3Server()
    server.start()
    urlopen(Request(f"{server.endpoint}/moto-api/reset", method="POST"), timeout=30).close()  # an empty store
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        env.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": server.endpoint,
                        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        env.setenv(name, value)
    bucket_filesystem.cache_clear()
    try:
        yield server
    finally:
        bucket_filesystem.cache_clear()
        with contextlib.suppress(Exception):
            server.stop()


def upload(folder: Path, bucket: str, prefix: str) -> int:
    """Create ``bucket`` and copy every regular file below ``folder`` (hidden ones too, links not followed) to
    ``prefix/<path relative to folder>``; returns the number of objects."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    count = 0
    for root, _dirs, files in os.walk(folder):  # os.walk does not follow symlinked folders
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            key = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}".lstrip("/")
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            count += 1
    return count
