"""A server path as a page shows it: relative to the data folder (`jobs/<run>`), never the server's absolute path,
which says nothing to a user of a pod and tells a visitor how the server is laid out."""

from __future__ import annotations

from pathlib import Path


def in_data_folder(path: str | Path, *, data_root: Path) -> str:
    """`path` relative to the data folder ("jobs/<run>/output"); a path outside it: its name alone."""
    target, root = Path(path), Path(data_root)
    for base in (root, root.resolve()):
        if target.is_relative_to(base):
            return target.relative_to(base).as_posix() or "."
    return target.name
