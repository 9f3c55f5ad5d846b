"""`pip wheel --find-links DIR` with abistamp's wheel in DIR: the DeepSpeed example as it is,
built by pip in an isolated environment (test_build_requirement.py has the other ways)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import clean_env, run
from .dist_support import abistamp_wheel
from .test_build_requirement import TORCH, assert_stamped, example_project

pytest_plugins = ["tests.abistamp_dist"]


@pytest.mark.slow
def test_pip_wheel_with_find_links(abistamp_dist: Path, torch213_wheels: Path,
                                   tmp_path: Path) -> None:
    assert abistamp_wheel(abistamp_dist).is_file()
    project = example_project(tmp_path / "probe")
    # pip asks for the metadata first, so the version keeps no local label (docs/stamping.md).
    # PIP_NO_COMPILE only spares byte-compiling torch in the isolated build environment.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--find-links", abistamp_dist,
         "--find-links", torch213_wheels, *TORCH, "-w", tmp_path / "pip", project],
        env=clean_env(PIP_NO_COMPILE="1"))
    assert_stamped(tmp_path / "pip", local=False)
