"""Checks of S3 storage options, and the message for missing credentials.

A wrong option type would otherwise surface as a raw botocore or Python error far from its cause
(`endpoint_url=5` gives "'int' object is not iterable"); these checks name the option and the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CREDENTIALS_HELP", "check_storage_options"]

# The s3fs storage options that mean something for one client; anything else is a TypeError.
S3FS_OPTIONS = {"endpoint_url", "key", "secret", "token", "anon", "profile", "client_kwargs", "config_kwargs"}
_STRINGS = ("endpoint_url", "key", "secret", "token", "profile")
_MAPPINGS = ("client_kwargs", "config_kwargs")

CREDENTIALS_HELP = (
    "S3 credentials are missing ({detail}). They are looked for in the storage options key= and "
    "secret= (and token=), then the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(and AWS_SESSION_TOKEN), then the shared files ~/.aws/credentials and ~/.aws/config (profile= or "
    "AWS_PROFILE picks the profile), then container or instance metadata; pass anon=True for a public bucket"
)


def check_storage_options(url: str, options: Mapping[str, Any]) -> None:
    """Raise `TypeError` / `ValueError` naming the first storage option that cannot work, and `url`."""
    unknown = set(options) - S3FS_OPTIONS
    if unknown:
        raise TypeError(f"unknown S3 storage options {sorted(unknown)} for {url!r}; known: {sorted(S3FS_OPTIONS)}")
    for name in _STRINGS:
        value = options.get(name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"S3 storage option {name} must be a str, got {value!r} for {url!r}")
    for name in _MAPPINGS:
        value = options.get(name)
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"S3 storage option {name} must be a dict, got {value!r} for {url!r}")
    for name, value in (options.get("config_kwargs") or {}).items():
        seconds = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name.endswith("_timeout") and value is not None and not seconds:
            raise TypeError(f"S3 storage option config_kwargs[{name!r}] must be a number of seconds, got {value!r} for {url!r}")
    anon = options.get("anon")
    if anon is not None and not isinstance(anon, bool):
        raise TypeError(f"S3 storage option anon must be True or False, got {anon!r} for {url!r}")
    endpoint = options.get("endpoint_url")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"S3 storage option endpoint_url must start with http:// or https://, got {endpoint!r} for {url!r}")
    if (options.get("key") is None) != (options.get("secret") is None):
        given, missing = ("key", "secret") if options.get("key") is not None else ("secret", "key")
        raise ValueError(f"S3 storage option {given}= needs {missing}= too, for {url!r}")
