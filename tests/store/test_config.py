"""default_url(): EXPSTORE_URL, then expstore.toml / [tool.expstore], then ./runs."""

from __future__ import annotations

import pytest

from expstore import InvalidURL, default_url


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("EXPSTORE_URL", raising=False)


def test_default_is_runs_folder(tmp_path):
    assert default_url(tmp_path) == "./runs"


def test_environment_wins(tmp_path, monkeypatch):
    (tmp_path / "expstore.toml").write_text('url = "s3://from-file/x"\n')
    monkeypatch.setenv("EXPSTORE_URL", "s3://from-env/runs")
    assert default_url(tmp_path) == "s3://from-env/runs"


def test_expstore_toml_in_a_parent_folder(tmp_path):
    (tmp_path / "expstore.toml").write_text('url = "s3://bucket/runs"\n')
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert default_url(nested) == "s3://bucket/runs"


def test_pyproject_table_and_relative_paths_resolve_from_the_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.expstore]\nurl = "results"\n')
    sub = tmp_path / "src"
    sub.mkdir()
    assert default_url(sub) == str(tmp_path / "results")


def test_pyproject_without_table_is_ignored(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert default_url(tmp_path) == "./runs"


def test_broken_config_names_the_file(tmp_path):
    (tmp_path / "expstore.toml").write_text("url = [unclosed\n")
    with pytest.raises(InvalidURL, match="expstore.toml"):
        default_url(tmp_path)
    (tmp_path / "expstore.toml").write_text("url = 3\n")
    with pytest.raises(InvalidURL, match="non-empty string"):
        default_url(tmp_path)
