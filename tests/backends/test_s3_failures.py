"""S3 failure modes a user meets: dead endpoints, missing buckets, wrong credentials."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator

import pytest

from expstore import BackendUnavailable, KeyNotFound, StoreError, open_store
from expstore.experiment_logger import ExperimentLogger

from ..s3servers import ACCESS_KEY, SECRET_KEY, free_port

CREDENTIALS = {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"region_name": "us-east-1"}}


def test_refused_endpoint_raises_backend_unavailable_naming_the_url():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = open_store("s3://bucket/run", endpoint_url=endpoint, **CREDENTIALS)
    with pytest.raises(BackendUnavailable) as info:
        store.write("k", b"v")
    assert "s3://bucket/run" in str(info.value) and "'k'" in str(info.value)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """The URL of a socket that accepts TCP connections (its backlog does) but never replies."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("operation", ["read", "write", "list"])
def test_endpoint_that_never_answers_is_reported_within_the_default_bound(silent_endpoint, operation):
    store = open_store("s3://bucket/run", endpoint_url=silent_endpoint, **CREDENTIALS)
    call = {"read": lambda: store.read("k"), "write": lambda: store.write("k", b"v"), "list": store.list}[operation]
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="s3://bucket/run"):
        call()
    assert time.monotonic() - started < 15  # a bound, not a benchmark: 6-9 s by default, ~25 s before


def test_timeouts_and_retries_are_configurable(silent_endpoint):
    quick = {"connect_timeout": 1, "read_timeout": 1, "retries": {"total_max_attempts": 1}}
    store = open_store("s3://bucket/run", endpoint_url=silent_endpoint, config_kwargs=quick, **CREDENTIALS)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        store.read("k")
    assert time.monotonic() - started < 5


def test_logger_finalize_on_an_endpoint_that_never_answers_is_bounded(silent_endpoint):
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the logger warns that the events were lost
        logger = ExperimentLogger(
            "dead", "s3://bucket/run", log_to_console=False, endpoint_url=silent_endpoint, **CREDENTIALS
        )
        logger.log_metrics({"loss": 1.0}, step=1)
        summary = logger.finalize()
    assert summary["events_written"] == 0 and summary["events_lost"] > 0
    assert time.monotonic() - started < 15  # was ~25 s in finalize alone


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


def test_missing_credentials_say_where_they_are_looked_for(moto_server, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none" / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3://expstore-test/nocreds", endpoint_url=moto_server.endpoint_url)
    with pytest.raises(StoreError) as info:
        store.write("k", b"v")
    message = str(info.value)
    assert not isinstance(info.value, BackendUnavailable) and "unreachable" not in message
    assert "credentials are missing" in message and "s3://expstore-test/nocreds" in message
    for place in ("key=", "secret=", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "~/.aws/credentials", "profile="):
        assert place in message


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"endpoint_url": 5}, TypeError, "endpoint_url"),
        ({"endpoint_url": "localhost:9000"}, ValueError, "endpoint_url"),
        ({"key": 5, "secret": "s"}, TypeError, "key"),
        ({"key": "k"}, ValueError, "secret"),
        ({"anon": "yes"}, TypeError, "anon"),
        ({"client_kwargs": 3}, TypeError, "client_kwargs"),
        ({"client_kwargs": {"no_such_argument": 1}}, TypeError, "client_kwargs"),
        ({"config_kwargs": {"read_timeout": "10"}}, TypeError, "read_timeout"),
        ({"config_kwargs": {"no_such_setting": 1}}, TypeError, "config_kwargs"),
        ({"profile": "expstore-no-such-profile"}, ValueError, "profile"),
        ({"endpont_url": "http://127.0.0.1:1"}, TypeError, "endpont_url"),
    ],
)
def test_bad_storage_options_raise_naming_the_option(options, error, named):
    with pytest.raises(error, match=named) as info:
        open_store("s3://bucket/run", **options)
    assert "s3://bucket/run" in str(info.value)
