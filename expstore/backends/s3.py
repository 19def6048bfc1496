"""S3Store: `s3://bucket/prefix` on botocore's client, configured with s3fs's option names.

One PUT per value (parallel multipart above `MULTIPART_THRESHOLD` for unconditional writes),
conditional writes with `If-None-Match: *` / `If-Match: <etag>`, range GETs, and bounded
timeouts and retries so that a dead endpoint fails in seconds, not minutes. Why botocore and
not s3fs for the transfers: see docs/decisions.md (s3fs reads 2.4-3.9x slower than boto3 here).
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.session
import numpy as np
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ProfileNotFound

from ..errors import InvalidURL, KeyNotFound, PreconditionFailed, StoreError
from ..store.base import Store
from .s3_conditions import honours_conditions, ignored_conditions_reason, probe_key
from .s3_errors import RangePastEnd, s3_errors
from .s3_options import check_storage_options

__all__ = ["DEFAULT_CONFIG", "S3Store", "http_response_under", "open_url"]

MULTIPART_THRESHOLD = 256 * 2**20
PART_SIZE = 64 * 2**20
MAX_CONCURRENT_PARTS = 4
READ_CHUNK = 2**20  # read_buffer copies the response into its buffer in chunks of this size

# Bounds for an endpoint that accepts connections and never answers: two attempts (botocore's
# "max_attempts" counts retries, "total_max_attempts" counts all), each waiting one read timeout (a PUT
# also waits 1 s for "100 Continue"), plus up to 1 s of backoff: BackendUnavailable after 6-9 s
# (docs/stores.md). Override with config_kwargs.
DEFAULT_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 3,
    "retries": {"total_max_attempts": 2, "mode": "standard"},
}


def make_client(url: str, **storage_options: Any) -> Any:
    """A botocore S3 client from s3fs-style storage options (credentials also from the AWS env/config)."""
    check_storage_options(url, storage_options)
    config = {**DEFAULT_CONFIG, **(storage_options.get("config_kwargs") or {})}
    if storage_options.get("anon"):
        config["signature_version"] = UNSIGNED
    try:
        botocore_config = Config(**config)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"S3 storage option config_kwargs for {url!r}: {exc}") from None
    session = botocore.session.Session(profile=storage_options.get("profile"))
    client_kwargs = dict(storage_options.get("client_kwargs") or {})
    if storage_options.get("endpoint_url"):
        client_kwargs["endpoint_url"] = storage_options["endpoint_url"]
    try:
        if "region_name" not in client_kwargs and not session.get_config_variable("region"):
            client_kwargs["region_name"] = "us-east-1"  # S3-compatible servers ignore it; AWS redirects
        return session.create_client(
            "s3",
            aws_access_key_id=storage_options.get("key"),
            aws_secret_access_key=storage_options.get("secret"),
            aws_session_token=storage_options.get("token"),
            config=botocore_config,
            **client_kwargs,
        )
    except ProfileNotFound as exc:
        raise ValueError(f"S3 storage option profile for {url!r}: {exc} (in ~/.aws/config or ~/.aws/credentials)") from None
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"S3 storage option client_kwargs for {url!r}: {exc}") from None


class S3Store(Store):
    """Values are objects `<prefix>/<key>` in one bucket; version tokens are ETags."""

    def __init__(self, bucket: str, prefix: str, url: str, **storage_options: Any):
        if not bucket:
            raise InvalidURL("an S3 URL needs a bucket: s3://bucket/prefix", url=url)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = make_client(url, **storage_options)
        super().__init__(url)

    @property
    def supports_conditional_writes(self) -> bool:  # type: ignore[override]
        """True only when the server honours If-None-Match / If-Match (probed once per bucket per process)."""
        key = probe_key()
        return honours_conditions(
            str(self.client.meta.endpoint_url),
            self.bucket,
            lambda data, conditions: self._put_creating_bucket(key, [data], conditions),
            lambda: self._call("delete_object", key, Key=self._object(key)),
        )

    @property
    def no_conditional_writes_reason(self) -> str:  # type: ignore[override]
        return ignored_conditions_reason(self.client.meta.endpoint_url)

    # ---- plumbing ---------------------------------------------------------------------------

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, key: str | None, **kwargs: Any) -> Any:
        with self._errors(key):
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)

    def _errors(self, key: str | None) -> contextlib.AbstractContextManager[None]:
        """Translate botocore failures into expstore errors naming the URL and key."""
        return s3_errors(self.url, key, self.bucket)

    def _head(self, key: str) -> dict[str, Any]:
        return self._call("head_object", key, Key=self._object(key))

    # ---- hooks ------------------------------------------------------------------------------

    def _read(self, key: str) -> bytes:
        response = self._call("get_object", key, Key=self._object(key))
        with self._errors(key):
            return response["Body"].read()

    def _read_buffer(self, key: str) -> np.ndarray:
        response = self._call("get_object", key, Key=self._object(key))
        buffer = np.empty(response["ContentLength"], np.uint8)
        # Fault the pages in before the transfer: a socket read that faults (huge) pages in as it
        # goes made one 256 MiB load in three take 2-3x as long here; after a fill they do not.
        buffer.fill(0)
        with self._errors(key):
            filled = self._read_into(key, response["Body"], buffer)
        if filled != len(buffer):
            raise StoreError(f"read cut short: {filled} of {len(buffer)} bytes", url=self.url, key=key)
        return buffer

    def _read_into(self, key: str, body: Any, buffer: np.ndarray) -> int:
        """Fill `buffer` from botocore's streaming body; return how many bytes came.

        Where the body exposes the `http.client` response under it (botocore on urllib3 does),
        the socket reads straight into `buffer`: no intermediate `bytes`, and none of the 2-3x
        slow loads that reading the same object in 1 or 8 MiB chunks showed here about one time in
        eight (256 MiB from SeaweedFS: median 0.65x urllib3's own `read()`, 0.8x chunked). That
        path skips botocore's response checksum, if the server sent one; checkpoint arrays carry
        their own crc32c, checked on every load. Elsewhere, chunk by chunk.
        """
        view, filled = memoryview(buffer), 0
        under = http_response_under(body)
        if under is not None:
            response, stream = under
            while filled < len(buffer) and (n := response.readinto(view[filled:])):
                filled += n
            stream.release_conn()  # the response is read to its end: the connection goes back to the pool
            return filled
        for chunk in body.iter_chunks(READ_CHUNK):  # botocore checks the length at the end
            if filled + len(chunk) > len(buffer):
                raise StoreError(f"the object is longer than the {len(buffer)} bytes announced", url=self.url, key=key)
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        stop = "" if end is None else str(end - 1)
        try:
            response = self._call("get_object", key, Key=self._object(key), Range=f"bytes={start}-{stop}")
        except RangePastEnd:
            self._head(key)  # S3 answers 416 to a start at or past the end: an empty slice if the key exists
            return b""
        with self._errors(key):
            body = response["Body"].read()
        # Some servers (s3rver) answer `bytes=0-0` with the whole object: keep only what was asked for.
        first = _range_start(response.get("ContentRange"))
        if first is None or first > start:
            raise StoreError(f"the server answered a range GET with {response.get('ContentRange')!r}", url=self.url, key=key)
        return body[start - first : None if end is None else end - first]

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        return self._write_parts(key, [data], if_absent, if_match)

    def _write_parts(self, key: str, parts: list[bytes | memoryview], if_absent: bool, if_match: str | None) -> str:
        conditions: dict[str, str] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        return self._put_creating_bucket(key, parts, conditions)

    def _put_creating_bucket(self, key: str, parts: list[bytes | memoryview], conditions: dict[str, str]) -> str:
        try:
            return self._put(key, parts, conditions)
        except KeyNotFound as exc:
            if "bucket" not in exc.message:
                raise
            self._create_bucket()  # the first write creates the container, as on every backend
            return self._put(key, parts, conditions)

    def _put(self, key: str, parts: list[bytes | memoryview], conditions: dict[str, str]) -> str:
        if conditions or sum(map(len, parts)) <= MULTIPART_THRESHOLD:
            body = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
            try:
                return self._call("put_object", key, Key=self._object(key), Body=body, **conditions)["ETag"]
            except KeyNotFound as exc:
                if "IfMatch" not in conditions or "bucket" in exc.message:
                    raise
                # AWS and moto answer If-Match on a missing object with 404 NoSuchKey, SeaweedFS with 412.
                raise PreconditionFailed("if_match: the key holds no value", url=self.url, key=key) from exc
        return self._multipart(key, parts)

    def _multipart(self, key: str, parts: list[bytes | memoryview]) -> str:
        """Upload `parts` (laid back to back) in PART_SIZE pieces, each copied out of them once."""
        name = self._object(key)
        starts = list(itertools.accumulate((len(p) for p in parts), initial=0))
        upload_id = self._call("create_multipart_upload", key, Key=name)["UploadId"]

        def send(number: int) -> dict[str, Any]:
            start = (number - 1) * PART_SIZE
            body = _slice(parts, starts, start, min(start + PART_SIZE, starts[-1]))
            part = self._call("upload_part", key, Key=name, UploadId=upload_id, PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": part["ETag"]}

        try:
            with ThreadPoolExecutor(MAX_CONCURRENT_PARTS) as pool:
                uploaded = list(pool.map(send, range(1, -(-starts[-1] // PART_SIZE) + 1)))
            done = self._call(
                "complete_multipart_upload", key, Key=name, UploadId=upload_id, MultipartUpload={"Parts": uploaded}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", key, Key=name, UploadId=upload_id)
            raise
        return done["ETag"]

    def _create_bucket(self) -> None:
        try:
            self._call("create_bucket", None)
        except StoreError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    def _delete(self, key: str) -> None:
        self._head(key)  # deleting a missing key raises KeyNotFound, as on every backend
        self._call("delete_object", key, Key=self._object(key))

    def _size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def _version(self, key: str) -> str:
        return self._head(key)["ETag"]

    def _list(self, prefix: str) -> Iterator[str]:
        for key, _ in self._list_versions(prefix):
            yield key

    def _list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        base = f"{self.prefix}/" if self.prefix else ""
        kwargs: dict[str, Any] = {"Prefix": base + prefix}
        while True:
            try:
                page = self._call("list_objects_v2", None, **kwargs)
            except KeyNotFound:
                return  # no bucket: nothing stored yet
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # folder markers made by consoles are not values
                    yield item["Key"][len(base) :], item["ETag"]  # the ETag `version` (a HEAD) returns
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _close(self) -> None:
        self.client.close()


def http_response_under(body: Any) -> tuple[http.client.HTTPResponse, Any] | None:
    """The `http.client` response under botocore's streaming body, with the urllib3 response that owns
    its connection; None where the body is built otherwise.

    Neither library shows it publicly: botocore keeps the urllib3 response in `StreamingBody._raw_stream`
    and urllib3 the `http.client` one in `HTTPResponse._fp` (tests/backends/test_library_privates.py
    checks both), and only the latter reads from the socket straight into a caller's buffer.
    """
    stream = getattr(body, "_raw_stream", None)
    response = getattr(stream, "_fp", None)
    if isinstance(response, http.client.HTTPResponse) and hasattr(stream, "release_conn"):
        return response, stream
    return None


def _range_start(content_range: str | None) -> int | None:
    """Where the bytes of a range GET's body start, from its `Content-Range` (none: the whole object)."""
    if content_range is None:
        return 0
    unit, _, spec = content_range.partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _slice(parts: list[bytes | memoryview], starts: list[int], start: int, stop: int) -> bytes:
    """Bytes [start, stop) of `parts` laid back to back (`starts`: where each part begins), in one copy."""
    i = bisect.bisect_right(starts, start) - 1
    pieces = []
    while start < stop:
        a, b = start - starts[i], min(len(parts[i]), stop - starts[i])
        pieces.append(memoryview(parts[i])[a:b])  # a view: the join below is the one copy
        start += b - a
        i += 1
    return b"".join(pieces)


def open_url(url: str, location: str, **storage_options: Any) -> S3Store:
    """Open `s3://bucket[/prefix]`; storage options use s3fs's names (endpoint_url, key, secret, ...)."""
    bucket, _, prefix = location.partition("/")
    return S3Store(bucket, prefix, url, **storage_options)
