"""Session fixtures of the command-line tests, shared between modules as a pytest plugin
(`pytest_plugins = ["tests.cli_fixtures"]`): conftest.py is not theirs to extend.

The wheelhouses are built once per session by the real command (real uv, real torch, a real
compile of examples/tiny-ext) and shared: tests that change one work on a copy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from .cli_support import cli
from .conftest import EXAMPLES, Result, copy_project, made_once, shared_folder


@pytest.fixture(scope="session")
def tiny_wheelhouse(tmp_path_factory: pytest.TempPathFactory, torch213_wheels: Path
                    ) -> tuple[Path, Path, Result]:
    """examples/tiny-ext built by `abistamp build` for torch 2.13.0+cpu: (wheelhouse, source
    tree, the build's result). Built once per run, also when the tests run on two workers."""
    with made_once(tmp_path_factory, "tiny-wh") as base:
        if base is not None:
            src = copy_project(EXAMPLES / "tiny-ext", base / "tiny-ext")
            kept(base, cli("build", src, "--torch", "torch==2.13.0", "--find-links",
                           torch213_wheels, "-o", base / "wheelhouse", "--work-dir",
                           base / "work"))
    base = shared_folder(tmp_path_factory, "tiny-wh")
    return base / "wheelhouse", base / "tiny-ext", kept(base)


@pytest.fixture(scope="session")
def tiny_wheelhouse_214(tmp_path_factory: pytest.TempPathFactory,
                        tiny_wheelhouse: tuple[Path, Path, Result], torch214_wheels: Path
                        ) -> tuple[Path, Result]:
    """The same tiny-ext source built by a separate `abistamp build` run, into a wheelhouse of
    its own, for the CUDA 13.0 build of torch 2.14.1 (as a second CI runner would):
    (wheelhouse, the build's result)."""
    with made_once(tmp_path_factory, "tiny-wh-214") as base:
        if base is not None:
            kept(base, cli("build", tiny_wheelhouse[1], "--torch", "torch==2.14.1",
                           "--find-links", torch214_wheels, "-o", base / "wheelhouse",
                           "--work-dir", base / "work"))
    base = shared_folder(tmp_path_factory, "tiny-wh-214")
    return base / "wheelhouse", kept(base)


def kept(base: Path, result: Result | None = None) -> Result:
    """The build's result, written beside what it built for the other worker to read."""
    path = base / "result.json"
    if result is not None:
        path.write_text(json.dumps(dataclasses.asdict(result)))
    return Result(**json.loads(path.read_text()))
