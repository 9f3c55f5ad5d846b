"""The backend's fail-fast errors, through a real frontend, before anything is compiled.

Each case runs `uv build --wheel` on a real project and checks three things: the build fails,
the message names the problem and the fix, and no object file was compiled (the error came
before the compiler; for the probe, which compiles nothing: the wrapped backend's build never
started) and no wheel was written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .cli_support import fresh_env
from .conftest import Env, need, run, uv_bin

pytestmark = pytest.mark.slow


def build(project: Path, env: Env, tmp_path: Path, *args: str, **environ: str) -> str:
    out = tmp_path / "out"
    result = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env.python,
                  "--out-dir", out, *args, project], env=env.env(**environ), check=False)
    assert result.returncode != 0, result.output
    assert not list(out.glob("*.whl")) if out.exists() else True
    assert not list(project.rglob("*.o")), "the error must come before any compiling"
    if not (project / "csrc").is_dir():
        # The probe compiles nothing: what shows the error came first is that the wrapped
        # backend's build never started (setuptools' bdist_wheel makes build/ first).
        assert not (project / "build").exists(), "the error must come before the build"
    return result.output


def test_torch_not_the_expected_one(probe: Path, env213: Env, tmp_path: Path) -> None:
    output = build(probe, env213, tmp_path, "-C", "abistamp.torch=torch==2.14.*")
    assert "found torch 2.13.0+cpu (cpu), but config setting `abistamp.torch` asks for " \
           "`torch==2.14.*`" in output
    assert "fix: install the torch that the setting names" in output


def test_require_cuda_with_a_cpu_torch(probe: Path, env213: Env, tmp_path: Path) -> None:
    output = build(probe, env213, tmp_path, ABISTAMP_REQUIRE_CUDA="1")
    assert "asks for a CUDA build, but the build environment has torch 2.13.0+cpu" in output


def test_cuda_sources_with_a_cpu_torch(tiny: Path, env213: Env, tmp_path: Path) -> None:
    output = build(tiny, env213, tmp_path, TINY_EXT_CUDA="1")
    assert "compiles CUDA sources (`CUDAExtension`), but torch 2.13.0+cpu in the build " \
           "environment is a CPU build" in output


@pytest.mark.cuda
def test_nvcc_missing(tiny: Path, env214: Env, tmp_path: Path) -> None:
    empty = tmp_path / "no-cuda-here"
    empty.mkdir()
    output = build(tiny, env214, tmp_path, TINY_EXT_CUDA="1", CUDA_HOME=str(empty))
    assert f"no working `nvcc` was found at `{empty}/bin/nvcc` (CUDA_HOME)" in output
    assert "fix: install the CUDA 13.0 toolkit" in output


@pytest.mark.cuda
def test_nvcc_of_another_major_version(tiny: Path, env214: Env, tmp_path: Path) -> None:
    # The machine has one toolkit (13.0); an nvcc that reports 12.4 is the only way to show
    # the mismatch check. It answers --version and nothing else: nothing may compile.
    fake = tmp_path / "cuda-12.4"
    (fake / "bin").mkdir(parents=True)
    nvcc = fake / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    output = build(tiny, env214, tmp_path, TINY_EXT_CUDA="1", CUDA_HOME=str(fake))
    assert "is CUDA 12.4, but torch 2.14.1 was built with CUDA 13.0" in output


@pytest.mark.cuda
def test_toolkit_root_without_headers(tiny: Path, env214: Env, tmp_path: Path) -> None:
    root = tmp_path / "bare-root"
    (root / "bin").mkdir(parents=True)
    real = Path(os.path.realpath("/usr/local/cuda/bin/nvcc"))
    need(real.exists(), "no CUDA toolkit at /usr/local/cuda on this machine")
    (root / "bin" / "nvcc").symlink_to(real)
    output = build(tiny, env214, tmp_path, TINY_EXT_CUDA="1", CUDA_HOME=str(root))
    assert f"the CUDA toolkit at `{root}` lacks include/cuda_runtime.h, lib64/libcudart.so" \
           in output


@pytest.mark.parametrize(("args", "environ", "message"), [
    (["-C", "abistamp.label=pt{major}-{minor}"], {}, "not a PEP 440 local version label"),
    (["-C", "abistamp.pinn=exact"], {}, "did you mean `abistamp.pin`?"),
    ([], {"ABISTAMP_BACKEND": "no_such_backend:thing"},
     ("`ABISTAMP_BACKEND` = 'no_such_backend:thing': the module `no_such_backend` cannot be "
     "imported")),
    ([], {"ABISTAMP_BACKEND": "setuptools.build_meta:no_such_object"},
     "`setuptools.build_meta` has no `no_such_object`"),
    ([], {"ABISTAMP_BACKEND": "json"}, "lacks the mandatory hook `build_wheel`"),
])
def test_bad_settings_through_a_frontend(probe: Path, env213: Env, tmp_path: Path,
                                         args: list[str], environ: dict[str, str],
                                         message: str) -> None:
    assert message in build(probe, env213, tmp_path, *args, **environ)


def test_unknown_setting_without_a_close_match(probe: Path, env213: Env, tmp_path: Path
                                               ) -> None:
    """No suggestion to make: the message names the key and lists what is known instead."""
    output = build(probe, env213, tmp_path, "-C", "abistamp.qqq=1")
    assert "unknown" in output and "`abistamp.qqq`" in output
    assert "did you mean" not in output, output
    assert "abistamp.label" in output and "abistamp.local-version" in output, output


def test_ninja_true_without_ninja(probe: Path, torch213_wheels: Path, tmp_path: Path) -> None:
    """An environment without the ninja package (uv puts the environment's bin/ on PATH), and
    no other ninja on PATH."""
    env = torch_env(tmp_path, torch213_wheels)
    bare = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "ninja").exists())
    output = build(probe, env, tmp_path, "-C", "abistamp.ninja=true", PATH=bare)
    assert "config setting `abistamp.ninja` asks for ninja, but no `ninja` is on PATH" in output
    assert "fix: install ninja" in output


def torch_env(tmp_path: Path, torch213_wheels: Path) -> Env:
    return fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0", "setuptools>=64",
                     "packaging>=22")


def test_torch_whose_import_raises(probe: Path, torch213_wheels: Path, tmp_path: Path) -> None:
    """A real torch with its C++ library gone, as a half-finished install or a cleaned-up cache
    leaves it (uv links its files from its cache: unlinking one is safe)."""
    env = torch_env(tmp_path, torch213_wheels)
    (library,) = env.root.glob("lib/python3*/site-packages/torch/lib/libtorch_cpu.so")
    library.unlink()
    output = build(probe, env, tmp_path)
    assert "torch is installed but `import torch` raised " in output
    assert "libtorch_cpu.so" in output
    assert "fix: repair or reinstall torch in the build environment" in output


def test_torch_missing_a_dependency(probe: Path, torch213_wheels: Path, tmp_path: Path) -> None:
    """A real torch whose own requirement was uninstalled: the module is named, not torch."""
    env = torch_env(tmp_path, torch213_wheels)
    run([uv_bin(), "pip", "uninstall", "-q", "-p", env.python, "typing-extensions"])
    output = build(probe, env, tmp_path)
    assert "torch is installed but importing it failed: No module named 'typing_extensions'" \
        in output
    assert "fix: install the module `typing_extensions` that torch needs, or reinstall torch" \
        in output
