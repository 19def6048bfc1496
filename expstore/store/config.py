"""The default root URL: `EXPSTORE_URL`, else an `expstore.toml` or `[tool.expstore]` table, else ./runs."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ..errors import InvalidURL

__all__ = ["DEFAULT_URL", "default_url"]

DEFAULT_URL = "./runs"


def default_url(start: str | os.PathLike[str] | None = None) -> str:
    """Return the configured default root URL.

    Looks at `EXPSTORE_URL`, then the nearest `expstore.toml` (key `url`) or `pyproject.toml`
    with a `[tool.expstore]` table (key `url`) in `start` (default: the current folder) or its
    parents. A relative path in a file is relative to that file's folder.
    """
    env = os.environ.get("EXPSTORE_URL", "").strip()
    if env:
        return env
    folder = Path(start or os.getcwd()).absolute()
    for candidate in (folder, *folder.parents):
        for name, table in (("expstore.toml", ()), ("pyproject.toml", ("tool", "expstore"))):
            config = candidate / name
            if config.is_file():
                url = _url_from(config, table)
                if url is not None:
                    return url
    return DEFAULT_URL


def _url_from(path: Path, table: tuple[str, ...]) -> str | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidURL(f"cannot read the expstore configuration in {path}: {exc}") from exc
    for name in table:
        data = data.get(name)
        if not isinstance(data, dict):
            return None
    url = data.get("url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL(f"'url' in {path} must be a non-empty string, got {url!r}")
    if "://" not in url and not os.path.isabs(url):
        return str(path.parent / url)
    return url
