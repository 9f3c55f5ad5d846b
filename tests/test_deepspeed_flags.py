"""DeepSpeed's build switches exported in the shell, as DeepSpeed's docs and CI jobs do it.

A plain `uv build` (isolated: the sdist, then the wheel from it) of a checkout with
examples/deepspeed/pyproject.toml dropped in and `DS_BUILD_CPU_ADAM=1` exported: DeepSpeed's
setup.py asserts torch whenever a `DS_BUILD_*` flag is set, also for the sdist, whose isolated
environment has no torch. The DeepSpeed profile holds the flags back during the sdist hooks, so
the sdist builds and the wheel built from it still compiles the op the flag asked for.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from .conftest import clean_env, read_record, run, uv_bin
from .test_deepspeed import DS_VERSION, ds_sdist, git_hash, make_checkout

pytestmark = pytest.mark.slow
__all__ = ["ds_sdist"]  # the session fixture, shared with test_deepspeed.py


def test_plain_uv_build_with_ds_build_flags_exported(ds_sdist: Path, torch213_wheels: Path,
                                                     tmp_path: Path) -> None:
    tree = make_checkout(ds_sdist, tmp_path)
    out = tmp_path / "out"
    result = run([uv_bin(), "build", "--find-links", torch213_wheels, "-C",
                  "abistamp.torch=torch==2.13.0", "--out-dir", out, tree],
                 env=clean_env(DS_BUILD_CPU_ADAM="1"), timeout=1500)
    version = f"{DS_VERSION}+{git_hash(tree)}"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    assert sdist.name == f"deepspeed-{version}.tar.gz"
    assert wheel.name == f"deepspeed-{version}-1pt213cpu-cp311-cp311-linux_x86_64.whl"
    assert "DS_BUILD_CPU_ADAM held back while the sdist is made" in result.stderr
    record = read_record(wheel)
    assert record["torch"] == "2.13.0+cpu"
    assert record["profile"]["installed_ops"] == ["cpu_adam"]
    assert record["profile"]["cpu"]["march"] == "native"  # the default: this builder's CPU
    assert record["profile"]["torch_info"]["version"] == "2.13"
    with tarfile.open(sdist) as tar:  # an sdist compiles nothing
        assert not [n for n in tar.getnames() if n.endswith((".so", ".o"))]
