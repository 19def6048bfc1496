"""S3 failure modes a user meets: dead endpoints, missing buckets, wrong credentials."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid

import pytest

from expstore import BackendUnavailable, KeyNotFound, StoreError, open_store

from .s3servers import ACCESS_KEY, SECRET_KEY, free_port

CREDENTIALS = {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"region_name": "us-east-1"}}


def test_refused_endpoint_raises_backend_unavailable_naming_the_url():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = open_store("s3://bucket/run", endpoint_url=endpoint, **CREDENTIALS)
    with pytest.raises(BackendUnavailable) as info:
        store.write("k", b"v")
    assert "s3://bucket/run" in str(info.value) and "'k'" in str(info.value)


def test_endpoint_that_never_answers_fails_well_under_a_minute():
    with socket.socket() as listener:  # accepts TCP connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = open_store("s3://bucket/run", endpoint_url=endpoint, **CREDENTIALS)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="s3://bucket/run"):
            store.read("k")
        assert time.monotonic() - started < 45  # measured ~25 s with the default timeouts


def test_first_write_creates_the_bucket(s3_server):
    bucket = f"fresh-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}/run", **s3_server.storage_options)
    assert store.list() == []
    with pytest.raises(KeyNotFound, match=bucket):
        store.read("k")
    store.write("k", b"v")
    assert store.read("k") == b"v"


def test_wrong_credentials_give_a_store_error_naming_the_url(s3_server):
    if s3_server.name == "moto":
        pytest.skip("moto accepts any credentials")
    options = dict(s3_server.storage_options, secret="wrong-secret")
    store = open_store("s3://expstore-test/creds", **options)
    with pytest.raises(StoreError, match="s3://expstore-test/creds"):
        store.write("k", b"v")


def test_bucket_only_url_uses_the_bucket_root(s3_server):
    bucket = f"root-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}", **s3_server.storage_options)
    store.write("a/b", b"1")
    assert store.list() == ["a/b"]
    assert s3_server.boto3_client().get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"1"


class _CutShort(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose every GET announces 1000 bytes, sends 600, and hangs up."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("ETag", '"x"')
        self.end_headers()
        self.wfile.write(b"\x07" * 600)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_response_cut_short_raises_naming_the_key():
    """A body that ends before its Content-Length is an error naming the key, never a half-filled buffer."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        config = {"retries": {"max_attempts": 1, "mode": "standard"}}
        store = open_store("s3://bucket/run", endpoint_url=endpoint, config_kwargs=config, **CREDENTIALS)
        with pytest.raises(StoreError, match="'ckpt'") as info:
            store.read_buffer("ckpt")
        assert "s3://bucket/run" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()
