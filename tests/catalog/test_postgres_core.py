"""The catalog core's own search tests (tests/catalog/test_search.py), run again on a real PostgreSQL:
every test there that takes a `catalog_url` is collected here too, with `catalog_url` a fresh database
(but the one that deletes the SQLite file; test_postgres.py drops the tables instead)."""

from __future__ import annotations

import inspect

import pytest

from . import test_search as core
from .test_search import root  # noqa: F401 - the module-scoped runs those tests search

SQLITE_ONLY = {"test_catalog_follows_the_store"}  # ends by deleting the catalog's file

for _name, _test in vars(core).items():
    if (_name.startswith("test_") and _name not in SQLITE_ONLY and callable(_test)
            and "catalog_url" in inspect.signature(_test).parameters):
        globals()[_name] = _test


@pytest.fixture
def catalog_url(postgres_url: str) -> str:
    return postgres_url
