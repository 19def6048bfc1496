"""The private attributes of s3fs, botocore and urllib3 that the S3 backends use where no public way
exists: each test fails when its library changes the private it checks."""

from __future__ import annotations

import http.client
import inspect
import uuid

import pytest

from expstore import open_store

pytestmark = pytest.mark.s3

BUCKET = "expstore-test"


def _sync(coro):
    from zarr.core.sync import sync  # the loop the zarr+s3 store's filesystem runs on

    return sync(coro)


@pytest.fixture
def zarr_s3(moto_server):
    store = open_store(f"zarr+s3://{BUCKET}/privates-{uuid.uuid4().hex[:10]}.zarr", **moto_server.storage_options)
    store.write("k", b"v")  # creates the bucket and the filesystem's session
    yield store
    store.close()


def test_s3fs_call_s3_sends_any_request_and_translates_its_errors(zarr_s3):
    import s3fs

    from expstore.backends.s3_errors import is_precondition_failure
    from expstore.backends.zarr.s3 import s3fs_request

    assert inspect.iscoroutinefunction(s3fs.S3FileSystem._call_s3)
    fs, name = zarr_s3.fs, f"privates/{uuid.uuid4().hex}"

    async def round_trip():
        put = await s3fs_request(fs, "put_object", Bucket=BUCKET, Key=name, Body=b"value")
        got = await s3fs_request(fs, "get_object", Bucket=BUCKET, Key=name)
        body = await got["Body"].read()
        try:
            await s3fs_request(fs, "get_object", Bucket=BUCKET, Key=name + "-missing")
            missing = None
        except Exception as exc:  # noqa: BLE001 - the test looks at what came
            missing = exc
        try:
            await s3fs_request(fs, "put_object", Bucket=BUCKET, Key=name, Body=b"again", IfNoneMatch="*")
            refused = None
        except Exception as exc:  # noqa: BLE001
            refused = exc
        return put["ETag"], got["ETag"], body, missing, refused

    put_etag, got_etag, body, missing, refused = _sync(round_trip())
    assert body == b"value" and put_etag == got_etag
    assert isinstance(missing, FileNotFoundError)  # a 404 translated into an OSError
    assert refused is not None and is_precondition_failure(refused)


def test_s3fs_session_closes_through_its_creator_and_reopens(zarr_s3):
    from expstore.backends.zarr.s3 import close_s3fs_session, s3fs_request

    fs = zarr_s3.fs
    assert fs._s3creator is not None and fs._s3 is not None  # what close_s3fs_session resets
    _sync(close_s3fs_session(fs))
    assert fs._s3creator is None and fs._s3 is None
    _sync(s3fs_request(fs, "head_bucket", Bucket=BUCKET))  # a new session opens on demand
    assert fs._s3 is not None


def test_botocore_body_exposes_the_http_client_response_under_it(moto_server):
    from expstore.backends.s3 import http_response_under

    store = open_store(f"s3://{BUCKET}/privates-{uuid.uuid4().hex[:10]}", **moto_server.storage_options)
    data = bytes(range(256)) * 1000
    store.write("k", data)
    body = store.client.get_object(Bucket=BUCKET, Key=store._object("k"))["Body"]
    under = http_response_under(body)
    assert under is not None, "botocore's StreamingBody._raw_stream or urllib3's HTTPResponse._fp changed"
    response, stream = under
    assert isinstance(response, http.client.HTTPResponse)
    buffer = bytearray(len(data))
    view, filled = memoryview(buffer), 0
    while filled < len(buffer) and (n := response.readinto(view[filled:])):
        filled += n
    stream.release_conn()
    assert bytes(buffer) == data
    store.close()
