"""Paging through a search: `offset=` and `Catalog.count`, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from expstore.catalog import open_catalog

from .test_search import log_run


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_pages_cover_the_search_once_and_count_names_its_keys(tmp_path: Path, catalog_url: str) -> None:
    for i in range(7):
        log_run(tmp_path, f"run{i}", {"lr": i / 10, **({"extra": "x"} if i == 3 else {})}, {"loss": 1 / (i + 1)}, "completed")
    with open_catalog(catalog_url) as catalog:
        catalog.sync(tmp_path)
        whole = list(catalog.search(tmp_path, "params.lr >= 0.2", "metrics.loss")["name"])
        pages = [list(catalog.search(tmp_path, "params.lr >= 0.2", "metrics.loss", 2, offset=o)["name"]) for o in (0, 2, 4, 6)]
        assert whole == ["run6", "run5", "run4", "run3", "run2"] and sum(pages, []) == whole and pages[-1] == []
        count, keys = catalog.count(tmp_path, "params.lr >= 0.2")
        assert count == 5 and keys["params"] == ["extra", "lr"] and keys["metrics"] == ["loss"] and "host" in keys["tags"]
        count, keys = catalog.count(tmp_path, "params.lr > 0.35")
        assert count == 3 and keys["params"] == ["lr"]
        with pytest.raises(ValueError, match="offset"):
            catalog.search(tmp_path, offset=-1)
        with pytest.raises(ValueError, match="position"):
            catalog.count(tmp_path, "params.lr >")
