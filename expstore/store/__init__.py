"""The store layer: the Store protocol, key rules, `open_store(url)` and the default URL."""

from .base import Store
from .config import default_url
from .keys import validate_key
from .registry import known_schemes, open_store

__all__ = ["Store", "default_url", "known_schemes", "open_store", "validate_key"]
