"""S3Store: `s3://bucket/prefix` on s3fs (credentials, endpoints and config as s3fs users know them).

One PUT per value (parallel multipart above `MULTIPART_THRESHOLD` for unconditional writes),
conditional writes with `If-None-Match: *` / `If-Match: <etag>`, range GETs, and bounded
timeouts and retries so that a dead endpoint fails in seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import s3fs
from botocore.exceptions import BotoCoreError, ClientError
from fsspec.asyn import sync
from fsspec.exceptions import FSTimeoutError

from ..errors import BackendUnavailable, InvalidURL, KeyNotFound, PreconditionFailed, StoreError
from ..store.base import Store

MULTIPART_THRESHOLD = 64 * 2**20
PART_SIZE = 32 * 2**20
MAX_CONCURRENT_PARTS = 8

# Worst case against an endpoint that accepts connections and never answers: about 30 s (3 attempts;
# aiobotocore waits out the read timeout twice per attempt, measured). Override with config_kwargs.
DEFAULT_CONFIG = {
    "connect_timeout": 3,
    "read_timeout": 5,
    "retries": {"max_attempts": 3, "mode": "standard"},
}

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


class S3Store(Store):
    """Values are objects `<prefix>/<key>` in one bucket; version tokens are ETags."""

    supports_conditional_writes = True

    def __init__(self, bucket: str, prefix: str, url: str, **storage_options: Any):
        if not bucket:
            raise InvalidURL("an S3 URL needs a bucket: s3://bucket/prefix", url=url)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        config = dict(DEFAULT_CONFIG)
        config.update(storage_options.pop("config_kwargs", {}) or {})
        storage_options.setdefault("skip_instance_cache", True)  # this store owns its retry setting
        self.fs = s3fs.S3FileSystem(config_kwargs=config, **storage_options)
        self.fs.retries = 1  # botocore retries (above); s3fs's own loop would multiply them
        super().__init__(url)

    # ---- plumbing ---------------------------------------------------------------------------

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, key: str | None, **kwargs: Any) -> Any:
        with self._errors(key):
            return self.fs.call_s3(method, Bucket=self.bucket, **kwargs)

    @contextlib.contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Translate botocore / s3fs failures into expstore errors naming the URL and key."""
        try:
            yield
        except StoreError:
            raise
        except (BotoCoreError, FSTimeoutError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(f"S3 endpoint unreachable: {exc}", url=self.url, key=key) from exc
        except Exception as exc:
            client_error = exc if isinstance(exc, ClientError) else exc.__cause__
            if not isinstance(client_error, ClientError):
                raise
            error = client_error.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = error.get("Message") or str(client_error)
            if code == "NoSuchBucket":
                raise KeyNotFound(f"bucket {self.bucket!r} does not exist", url=self.url, key=key) from exc
            if code in _NOT_FOUND or status == "404":
                raise KeyNotFound("no value at this key", url=self.url, key=key) from exc
            if code in _PRECONDITION or status in _PRECONDITION:
                raise PreconditionFailed(f"S3 precondition failed: {message}", url=self.url, key=key) from exc
            raise StoreError(f"S3 error {code or status}: {message}", url=self.url, key=key) from exc

    def _head(self, key: str) -> dict[str, Any]:
        return self._call("head_object", key, Key=self._object(key))

    # ---- hooks ------------------------------------------------------------------------------

    def _read(self, key: str) -> bytes:
        with self._errors(key):
            return self.fs.cat_file(f"{self.bucket}/{self._object(key)}")

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        stop = "" if end is None else str(end - 1)
        try:
            response = self._call("get_object", key, Key=self._object(key), Range=f"bytes={start}-{stop}")
        except StoreError as exc:
            if "InvalidRange" in str(exc) or "416" in str(exc):  # start at or past the end
                self._head(key)
                return b""
            raise
        with self._errors(key):
            return sync(self.fs.loop, response["Body"].read)

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        conditions: dict[str, str] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        try:
            return self._put(key, data, conditions)
        except KeyNotFound as exc:
            if "bucket" not in exc.message:
                raise
            self._create_bucket()  # the first write creates the container, as on every backend
            return self._put(key, data, conditions)

    def _put(self, key: str, data: bytes | memoryview, conditions: dict[str, str]) -> str:
        if conditions or len(data) <= MULTIPART_THRESHOLD:
            body = data if isinstance(data, bytes) else bytes(data)
            try:
                return self._call("put_object", key, Key=self._object(key), Body=body, **conditions)["ETag"]
            except KeyNotFound as exc:
                if "IfMatch" not in conditions or "bucket" in exc.message:
                    raise
                # AWS and moto answer If-Match on a missing object with 404 NoSuchKey, SeaweedFS with 412.
                raise PreconditionFailed("if_match: the key holds no value", url=self.url, key=key) from exc
        with self._errors(key):
            return sync(self.fs.loop, self._multipart, self._object(key), memoryview(data))

    async def _multipart(self, name: str, view: memoryview) -> str:
        upload = await self.fs._call_s3("create_multipart_upload", Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        limit = asyncio.Semaphore(MAX_CONCURRENT_PARTS)

        async def send(number: int, start: int) -> dict[str, Any]:
            async with limit:
                part = await self.fs._call_s3(
                    "upload_part",
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + PART_SIZE]),
                )
            return {"PartNumber": number, "ETag": part["ETag"]}

        try:
            parts = await asyncio.gather(
                *(send(i + 1, start) for i, start in enumerate(range(0, len(view), PART_SIZE)))
            )
            done = await self.fs._call_s3(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.fs._call_s3("abort_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload_id)
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

    def _exists(self, key: str) -> bool:
        try:
            self._head(key)
        except KeyNotFound:
            return False
        return True

    def _size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def _version(self, key: str) -> str:
        return self._head(key)["ETag"]

    def _list(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        kwargs: dict[str, Any] = {"Prefix": base + prefix}
        while True:
            try:
                page = self._call("list_objects_v2", None, **kwargs)
            except KeyNotFound:
                return  # no bucket: nothing stored yet
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # folder markers made by consoles are not values
                    yield item["Key"][len(base) :]
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]


def open_url(url: str, location: str, **storage_options: Any) -> S3Store:
    """Open `s3://bucket[/prefix]`; storage options go to `s3fs.S3FileSystem` (endpoint_url, key, ...)."""
    bucket, _, prefix = location.partition("/")
    return S3Store(bucket, prefix, url, **storage_options)
