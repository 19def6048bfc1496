"""fsync of a path (file or folder) and of a whole tree: the durability steps the on-disk backends share."""

from __future__ import annotations

import os


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or folder by path (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(os.fspath(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder below `folder`, and the folder holding it."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)
    fsync_path(os.path.dirname(os.path.abspath(folder)))
