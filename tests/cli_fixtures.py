"""Session fixtures of the command-line tests, shared between modules as a pytest plugin
(`pytest_plugins = ["tests.cli_fixtures"]`): conftest.py is not theirs to extend.

The wheelhouses are built once per session by the real command (real uv, real torch, a real
compile of examples/tiny-ext) and shared: tests that change one work on a copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .cli_support import cli
from .conftest import EXAMPLES, Result, copy_project


@pytest.fixture(scope="session")
def tiny_wheelhouse(tmp_path_factory: pytest.TempPathFactory, torch213_wheels: Path
                    ) -> tuple[Path, Path, Result]:
    """examples/tiny-ext built by `abistamp build` for torch 2.13.0+cpu: (wheelhouse, source
    tree, the build's result)."""
    base = tmp_path_factory.mktemp("tiny-wh")
    src = copy_project(EXAMPLES / "tiny-ext", base / "tiny-ext")
    wheelhouse = base / "wheelhouse"
    result = cli("build", src, "--torch", "torch==2.13.0", "--find-links", torch213_wheels,
                 "-o", wheelhouse, "--work-dir", base / "work")
    return wheelhouse, src, result


@pytest.fixture(scope="session")
def tiny_wheelhouse_214(tmp_path_factory: pytest.TempPathFactory,
                        tiny_wheelhouse: tuple[Path, Path, Result], torch214_wheels: Path
                        ) -> tuple[Path, Result]:
    """The same tiny-ext source built by a separate `abistamp build` run, into a wheelhouse of
    its own, for the CUDA 13.0 build of torch 2.14.1 (as a second CI runner would):
    (wheelhouse, the build's result)."""
    base = tmp_path_factory.mktemp("tiny-wh-214")
    wheelhouse = base / "wheelhouse"
    result = cli("build", tiny_wheelhouse[1], "--torch", "torch==2.14.1", "--find-links",
                 torch214_wheels, "-o", wheelhouse, "--work-dir", base / "work")
    return wheelhouse, result
