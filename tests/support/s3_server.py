"""A real S3 API for tests: `moto_server` in a subprocess on a loopback port the OS picks (it binds port 0 and logs
the port it got: no free-port race).

    with moto_s3() as s3:
        s3.env          # BUCKET_ENDPOINT_URL / BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY for that server
        s3.client()     # a boto3 client talking to it
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from core.publishing import BucketDestination, bucket_of
from core.settings import Settings, s3_config
from core.spec import StorageSpec
from tests.support.announced import WERKZEUG, announced_url

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


@contextmanager
def moto_s3(*, start_timeout_s: float = 60.0) -> Iterator[S3Server]:
    # A file, not a pipe: moto logs every request, and an unread pipe would fill and stall it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        endpoint = announced_url(process, log, WERKZEUG, timeout_s=start_timeout_s, name="moto_server")
        requests.get(f"{endpoint}/moto-api/", timeout=max(1.0, deadline - time.monotonic())).raise_for_status()
        yield S3Server(endpoint=endpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def with_s3(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` with the S3 variables of `env` (the endpoint and keys of a test server) as its S3 settings."""
    return dataclasses.replace(settings, s3=s3_config(env))


def to_bucket(storage: StorageSpec, env: Mapping[str, str]) -> BucketDestination:
    """A job's `storage` as the destination an endpoint with the variables `env` gives it (destinations_of's rule)."""
    return bucket_of(storage, Settings.from_env(env))
