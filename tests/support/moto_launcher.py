"""moto's standalone server (moto_server) on a free loopback port: boto3 talks HTTP to it as to AWS.
The one launcher for the SQS collector tests, the S3 snapshot tests and the redaction corpus."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

from ports import free_port

REGION = "us-east-1"


class MotoServer:
    """Started on construction; `start()` is kept for callers that chain `MotoServer().start()`."""

    def __init__(self, env: dict | None = None, timeout: float = 30):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The moto of the Python running the tests: a `moto_server` on PATH may belong to another environment.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def start(self) -> MotoServer:
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def aws_test_env(monkeypatch, tmp_path=None) -> None:
    """Credentials from the environment only: no ~/.aws of the machine leaks into a test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    if tmp_path is not None:
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def make_bucket(moto: MotoServer) -> str:
    """A fresh, uniquely named bucket on this moto_server."""
    import boto3

    name = f"sw-snap-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto.url, region_name=REGION).create_bucket(Bucket=name)
    return name
