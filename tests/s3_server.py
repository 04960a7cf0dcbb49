"""A real S3 API on 127.0.0.1 for tests: moto's server mode (``ThreadedMotoServer``), nothing leaves the machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from garmentcv.infer.sources import bucket_filesystem


@contextlib.contextmanager
def moto_s3(env: pytest.MonkeyPatch, tmp: Path) -> Iterator[str]:
    """Start an S3 server on a free port of 127.0.0.1 and point the AWS environment at it (fake credentials,
    no config files, ``AWS_ENDPOINT_URL``); yields the endpoint URL. Everything is undone on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        env.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        env.setenv(name, value)
    bucket_filesystem.cache_clear()
    try:
        yield endpoint
    finally:
        bucket_filesystem.cache_clear()
        server.stop()


def upload(folder: Path, bucket: str, prefix: str) -> int:
    """Create ``bucket`` and copy every regular file below ``folder`` (hidden ones too, links not followed) to
    ``prefix/<path relative to folder>``; returns the number of objects."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    count = 0
    for root, dirs, files in os.walk(folder):  # os.walk does not follow symlinked folders
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            key = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}".lstrip("/")
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            count += 1
    return count
