"""A real S3 API for tests: `moto_server` in a subprocess on a free loopback port.

    with moto_s3() as s3:
        s3.env          # BUCKET_ENDPOINT_URL / BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY for that server
        s3.client()     # a boto3 client talking to it
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        return {
            "BUCKET_ENDPOINT_URL": self.endpoint,
            "BUCKET_ACCESS_KEY_ID": self.access_key,
            "BUCKET_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_s3(*, start_timeout_s: float = 30.0) -> Iterator[S3Server]:
    port = _free_port()
    # A file, not a pipe: moto logs every request, and an unread pipe would fill and stall it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto_server exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint}") from None
                time.sleep(0.1)
        yield S3Server(endpoint=endpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
