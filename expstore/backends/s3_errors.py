"""How S3 failures become expstore errors, for `S3Store` (botocore) and the zarr+s3 store (s3fs on botocore).

botocore raises `ClientError` for what the server answered and `BotoCoreError` for what never got an
answer; s3fs re-raises a `ClientError` as an `OSError` whose `__cause__` is the `ClientError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from ..errors import BackendUnavailable, KeyNotFound, PreconditionFailed, StoreError
from .s3_options import CREDENTIALS_HELP

__all__ = ["RangePastEnd", "endpoint_unreachable", "is_precondition_failure", "s3_errors"]

NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
PRECONDITION = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


class RangePastEnd(Exception):
    """S3 answered 416: the requested range starts at or past the end of the object."""


def _code_and_status(error: ClientError) -> tuple[str, str]:
    """The error code and the HTTP status of a server's answer, as strings ("" when absent)."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code, status


def is_precondition_failure(exc: BaseException) -> bool:
    """Whether `exc` (botocore's, or s3fs's wrapping of it) is a failed S3 precondition: 412 (or 409),
    also as the code of an answer with another status."""
    error = exc if isinstance(exc, ClientError) else exc.__cause__
    if not isinstance(error, ClientError):
        return False
    code, status = _code_and_status(error)
    return code in PRECONDITION or status in PRECONDITION


def endpoint_unreachable(exc: BaseException, url: str, key: str | None) -> BackendUnavailable:
    """The error for a request that got no answer (connection refused, timeouts)."""
    return BackendUnavailable(f"S3 endpoint unreachable: {exc}", url=url, key=key)


@contextlib.contextmanager
def s3_errors(url: str, key: str | None, bucket: str) -> Iterator[None]:
    """Turn botocore's failures inside the block into expstore errors naming `url` and `key`
    (a 416 into `RangePastEnd`, for the caller to answer)."""
    try:
        yield
    except ClientError as exc:
        code, status = _code_and_status(exc)
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        if code == "NoSuchBucket":
            raise KeyNotFound(f"bucket {bucket!r} does not exist", url=url, key=key) from exc
        if code in NOT_FOUND or status == "404":
            raise KeyNotFound("no value at this key", url=url, key=key) from exc
        if is_precondition_failure(exc):
            raise PreconditionFailed(f"S3 precondition failed: {message}", url=url, key=key) from exc
        if code == "InvalidRange" or status == "416":
            raise RangePastEnd from exc
        raise StoreError(f"S3 error {code or status}: {message}", url=url, key=key) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StoreError(CREDENTIALS_HELP.format(detail=exc), url=url, key=key) from exc
    except BotoCoreError as exc:
        raise endpoint_unreachable(exc, url, key) from exc
