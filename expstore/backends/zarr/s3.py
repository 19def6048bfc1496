"""S3ZarrStore: `zarr+s3://bucket/run.zarr`, zarr's FsspecStore on an async s3fs.

A write commits by switching the key's pointer (`zarr.json`) with one PUT conditioned on the
pointer's ETag (`If-Match`, or `If-None-Match: *` for a new key), so of two racing writers one
re-reads and the other's switch is never overwritten unseen. Whether the server honours those
conditions is probed once per endpoint and bucket (`s3_conditions`, shared with `S3Store`); on a
server that ignores them conditional writes raise `StoreError` and the switch is a plain PUT:
the last writer wins, which is safe only for one writer (a checkpoint manager there needs
`single_writer=True`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import s3fs
from botocore.exceptions import BotoCoreError
from fsspec.exceptions import FSTimeoutError
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from ...errors import InvalidURL, PreconditionFailed
from ...store.conditions import check_condition
from ..s3 import DEFAULT_CONFIG
from ..s3_conditions import honours_conditions, ignored_conditions_reason, probe_key
from ..s3_errors import endpoint_unreachable, is_precondition_failure
from .arrays import PASSTHROUGH
from .nodes import META, group_doc, join, live_of, node_of, pointer_of
from .store import ZarrStore

__all__ = ["S3ZarrStore", "close_s3fs_session", "s3fs_request"]

T = TypeVar("T")


class S3ZarrStore(ZarrStore):
    """`zarr+s3://bucket/path.zarr`: the pointer switch is a conditional PUT where the server honours conditions."""

    def __init__(self, location: str, url: str, array_options: dict[str, Any], storage_options: dict[str, Any]):
        self.bucket, _, prefix = location.strip("/").partition("/")
        if not self.bucket:
            raise InvalidURL("a zarr+s3 URL needs a bucket: zarr+s3://bucket/run.zarr", url=url)
        self.prefix = prefix.strip("/")
        config = dict(DEFAULT_CONFIG)
        config.update(storage_options.pop("config_kwargs", {}) or {})
        storage_options.setdefault("skip_instance_cache", True)
        storage_options.setdefault("use_listings_cache", False)  # other writers change the bucket
        self.fs = s3fs.S3FileSystem(asynchronous=True, config_kwargs=config, **storage_options)
        self.fs.retries = 1  # botocore retries (DEFAULT_CONFIG); s3fs's own loop would multiply them
        self._passthrough = (*PASSTHROUGH, BotoCoreError, FSTimeoutError)
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        super().__init__(FsspecStore(self.fs, path=path), url, path, array_options)

    @property
    def supports_conditional_writes(self) -> bool:  # type: ignore[override]
        """True only when the server honours If-None-Match / If-Match (probed once per bucket per process)."""
        key = probe_key()
        return honours_conditions(
            self._endpoint(),
            self.bucket,
            lambda data, conditions: self._run(self._put_probe(key, data, conditions), key),
            lambda: self._run(s3fs_request(self.fs, "delete_object", Bucket=self.bucket, Key=self._object(key)), key),
        )

    @property
    def no_conditional_writes_reason(self) -> str:  # type: ignore[override]
        return ignored_conditions_reason(self._endpoint())

    def _endpoint(self) -> str:
        """The endpoint botocore sends to: the same string `S3Store` names, so both share one probe."""

        async def endpoint() -> str:
            return str((await self.fs.set_session()).meta.endpoint_url)

        return self._run(endpoint())

    async def _put_probe(self, key: str, data: bytes, conditions: dict[str, str]) -> None:
        if not conditions:
            await self._prepare_container()  # the probe may be the first write to the bucket
        try:
            await s3fs_request(self.fs, "put_object", Bucket=self.bucket, Key=self._object(key), Body=data, **conditions)
        except Exception as exc:
            if not is_precondition_failure(exc):
                raise
            raise PreconditionFailed("the server refused the probe's condition", url=self.url, key=key) from exc

    def _run(self, coro: Coroutine[Any, Any, T], key: str | None = None) -> T:
        try:
            return super()._run(coro, key)
        except (BotoCoreError, FSTimeoutError, asyncio.TimeoutError) as exc:
            raise endpoint_unreachable(exc, self.url, key) from exc

    def _object(self, path: str) -> str:
        return join(self.prefix, path)

    async def _get_with_etag(self, path: str) -> tuple[bytes | None, str | None]:
        try:
            response = await s3fs_request(self.fs, "get_object", Bucket=self.bucket, Key=self._object(path))
        except FileNotFoundError:
            return None, None
        body = await response["Body"].read()
        return body, response["ETag"]

    async def _prepare_container(self) -> None:
        try:
            await s3fs_request(self.fs, "head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            try:
                await s3fs_request(self.fs, "create_bucket", Bucket=self.bucket)
            except Exception as exc:
                if "BucketAlreadyOwnedByYou" not in repr(exc) and "BucketAlreadyExists" not in repr(exc):
                    raise

    def _commit(self, key: str, write_child: Any, if_absent: bool, if_match: str | None) -> str:
        # Asked here, before the commit runs on zarr's event loop: the probe's requests need that loop.
        self._conditions_honoured = self.supports_conditional_writes
        return super()._commit(key, write_child, if_absent, if_match)

    async def _switch(self, key: str, pointer: dict[str, Any], if_absent: bool, if_match: str | None) -> str | None:
        path = join(node_of(key), META)
        while True:
            raw, etag = await self._get_with_etag(path)
            current = pointer_of(json.loads(raw)) if raw is not None else None
            check_condition(live_of(current), if_absent, if_match, self.url, key)
            condition: dict[str, str] = {}
            if self._conditions_honoured:  # else a plain PUT: the last writer wins
                condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            try:
                await s3fs_request(self.fs, 
                    "put_object", Bucket=self.bucket, Key=self._object(path), Body=group_doc(pointer), **condition
                )
            except Exception as exc:
                if not is_precondition_failure(exc):
                    raise
                if if_absent or if_match is not None:
                    raise PreconditionFailed("another writer changed this key first", url=self.url, key=key) from exc
                continue  # an unconditional write: re-read and switch again, so we know what we replaced
            return live_of(current)

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            sync(close_s3fs_session(self.fs))


async def s3fs_request(fs: Any, method: str, **kwargs: Any) -> Any:
    """One S3 API call (`put_object`, ...) through the session of the s3fs filesystem `fs`.

    s3fs has no public method for a PUT with If-Match / If-None-Match or a GET that returns the ETag
    with the body; its private `_call_s3` sends any request with the filesystem's session, retries
    and translation of botocore errors into OSError (tests/backends/test_library_privates.py checks it).
    """
    return await fs._call_s3(method, **kwargs)


async def close_s3fs_session(fs: Any) -> None:
    """Close the aiobotocore client of `fs` now, on the loop it runs on; a later request opens a new one.

    s3fs closes the client only in a finalizer at garbage collection and keeps its creator in the
    private `_s3creator` (the client in `_s3`), with no public way to close it on the running loop.
    """
    creator = getattr(fs, "_s3creator", None)
    if creator is not None:
        await creator.__aexit__(None, None, None)
        fs._s3creator = None
        fs._s3 = None

