"""abistamp's own wheel, built once per session from a copy of this checkout by `uv build`,
as a user who has no registry to install abistamp from builds it (docs/deepspeed.md). Loaded
as a plugin: `pytest_plugins = ["tests.abistamp_dist"]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import made_once, run, shared_folder, uv_bin
from .dist_support import checkout_copy


@pytest.fixture(scope="session")
def abistamp_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding abistamp's sdist and wheel (`uv build --out-dir DIST CHECKOUT`)."""
    with made_once(tmp_path_factory, "abistamp-dist") as base:
        if base is not None:
            source = checkout_copy(base / "abistamp")
            run([uv_bin(), "build", "--out-dir", base / "dist", source])
    return shared_folder(tmp_path_factory, "abistamp-dist") / "dist"
