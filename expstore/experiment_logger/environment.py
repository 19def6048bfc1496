"""What a user needs to reproduce a run: Python, packages, host, command line and git commit."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

# Reported when imported (or always, for numpy and expstore): the packages that shape a result.
PACKAGES = (
    "expstore", "numpy", "scipy", "pandas", "torch", "jax", "jaxlib", "tensorflow", "scikit-learn",
    "h5py", "zarr", "s3fs", "botocore",
)
_MODULE_OF = {"scikit-learn": "sklearn"}
GIT_TIMEOUT = 2.0

__all__ = ["describe_environment", "environment_line", "git_state", "package_versions"]


def package_versions() -> dict[str, str]:
    """Versions of numpy, expstore and of the other `PACKAGES` that this process has imported."""
    found = {}
    for name in PACKAGES:
        module = _MODULE_OF.get(name, name)
        if name not in ("expstore", "numpy") and module not in sys.modules:
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any] | None:
    """Commit and dirty flag of the git work tree around the current folder; None outside one."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def describe_environment() -> dict[str, Any]:
    """Python, platform, hostname, argv, cwd, pid, package versions and git state of this process."""
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "packages": package_versions(),
        "git": git_state(),
    }


def environment_line(env: dict[str, Any]) -> str:
    """One human line of the environment (the full record is in the structured log)."""
    git = env.get("git")
    where = f"git {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}" if git else "no git"
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    return f"Environment: Python {env['python']} on {env['hostname']}, {where}; {packages}; argv: {' '.join(env['argv'])}"
