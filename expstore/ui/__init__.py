"""`expstore ui`: a read-only web dashboard over any root URL (runs, one run's charts, comparisons).

Runs come from the SQL catalog, synced from the root in the background; a run's metrics, events
and checkpoints are read from the store itself, incrementally, so a running run's charts follow
its logger. The page is static (its chart library vendored), so the dashboard works offline.
"""

try:
    import starlette  # noqa: F401 - every module of the package needs the ASGI stack: say what to install, once
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'expstore ui needs starlette and uvicorn: pip install "expstore[ui]" ({exc})') from exc

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
