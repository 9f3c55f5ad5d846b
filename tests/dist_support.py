"""Helpers for tests that build abistamp itself (the fixture is in abistamp_dist.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import REPO

#: What a build of abistamp reads: its metadata, its readme and its package.
SOURCE_FILES = ("pyproject.toml", "README.md", "backend")


def checkout_copy(dest: Path) -> Path:
    """The files of this checkout that make abistamp's sdist and wheel, without build outputs."""
    dest.mkdir(parents=True)
    for name in SOURCE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", "build"))
        else:
            shutil.copyfile(src, dest / name)
    return dest


def abistamp_wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("abistamp-*-py3-none-any.whl")
    return wheel
