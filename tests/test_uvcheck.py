"""`abistamp uv-config --check`: a uv project that would reuse a torch build is caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .conftest import EXAMPLES, run

BAD = """\
[project]
name = "app"
version = "0.1.0"
dependencies = ["numpy"]

[project.optional-dependencies]
cpu = ["torch==2.13.0", "deepspeed==0.19.8"]
cu130 = ["torch==2.14.1", "deepspeed==0.19.8", "myext"]

[tool.uv]
conflicts = [[{ extra = "cpu" }, { extra = "cu130" }]]

[tool.uv.sources]
myext = { path = "myext" }
"""


def abistamp(*args: str | Path) -> tuple[int, str]:
    exe = shutil.which("abistamp") or str(Path(sys.executable).parent / "abistamp")
    result = run([exe, *args], check=False)
    return result.returncode, result.output


def test_bad_project_is_reported_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD)
    (tmp_path / "myext").mkdir()
    (tmp_path / "myext" / "setup.py").write_text(
        "from setuptools import setup\nfrom torch.utils.cpp_extension import BuildExtension\n"
        "setup(name='myext')\n")
    code, output = abistamp("uv-config", "--check", tmp_path / "pyproject.toml")
    assert code == 1, output
    assert "deepspeed" in output and "myext" in output and "numpy" not in output
    assert 'match-runtime = true' in output
    assert "imports torch at build time" in output


def test_both_deepspeed_recipes_pass(tmp_path: Path) -> None:
    for name in ("wheelhouse-project", "source-build-project"):
        code, output = abistamp("uv-config", "--check",
                                EXAMPLES / "deepspeed" / name / "pyproject.toml")
        assert code == 0, output
        assert "deepspeed: ok" in output


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, output = abistamp("uv-config", "--check", tmp_path / "nope.toml")
    assert code == 2 and "does not exist" in output


def test_source_build_config_keeps_only_what_every_build_shared() -> None:
    """A source build's config settings and variables are per package, the same for every
    extra: what differed between the wheelhouse's builds (a CUDA arch list for the CUDA build
    only) must not be handed to the other torch's build, and is named instead."""
    from abistamp.cli.uvconfig import _build_inputs
    from abistamp.cli.uvroutes import Route

    cpu = {"config_settings": {"abistamp.torch": "torch==2.13.0", "abistamp.pin": "exact"},
           "environment": {"DS_BUILD_CPU_ADAM": "1"}}
    cuda = {"config_settings": {"abistamp.torch": "torch==2.14.1", "abistamp.pin": "exact"},
            "environment": {"DS_BUILD_CPU_ADAM": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}}
    routes = [Route("cpu", "pt213cpu", {}, "2.13.0+cpu", None, [cpu]),
              Route("cu130", "pt214cu130", {}, "2.14.1", None, [cuda])]
    settings, variables, differing = _build_inputs(routes)
    assert settings == {"abistamp.pin": "exact"}
    assert variables == {"DS_BUILD_CPU_ADAM": "1"}
    assert differing == ["TORCH_CUDA_ARCH_LIST"]
