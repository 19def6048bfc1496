"""Scripts that tests run as child processes (`python -m tests.workers.<name>` from `REPO_ROOT`)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `tests/`, so `-m tests.workers.x` resolves
