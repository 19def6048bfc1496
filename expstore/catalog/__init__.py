"""The run catalog: an SQL index (SQLite by default, PostgreSQL for a team) of the runs the loggers
write under a root, rebuilt from the store at any time, searched with MLflow's filter syntax."""

from .catalog import Catalog, open_catalog, search_runs
from .engine import CATALOG_ENV, default_catalog_url
from .records import RunRecord

__all__ = ["CATALOG_ENV", "Catalog", "RunRecord", "default_catalog_url", "open_catalog", "search_runs"]
