"""`cuda-archs` and `cuda-toolkit`: their values, their errors, and the decisions that need no
compiler (the real builds are in test_cuda_builds.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from abistamp.cli.progress import compile_step
from abistamp.core.abi import TorchABI
from abistamp.core.cuda import (
    Archs,
    requirement_cuda,
    toolkit_requirement,
    torch_archs,
    unsupported_archs,
    wants_wheels,
)
from abistamp.core.errors import AbistampError
from abistamp.core.settings import Settings


def load(**config: str) -> Settings:
    return Settings.load(Path("/nonexistent"), {f"abistamp.{k}": v for k, v in config.items()},
                         {})


def test_cuda_archs_values() -> None:
    assert load().cuda_archs == "torch"
    assert load(**{"cuda-archs": "native"}).cuda_archs == "native"
    assert load(**{"cuda-archs": "8.0, 9.0a 12.0+PTX"}).cuda_archs == "8.0;9.0a;12.0+PTX"
    assert Settings.load(Path("/nonexistent"), None,
                         {"ABISTAMP_CUDA_ARCHS": "Hopper"}).cuda_archs == "Hopper"


@pytest.mark.parametrize("value, found", [("sm_90", "`sm_90`, which is not a CUDA arch"),
                                          ("9", "`9`, which is not a CUDA arch"),
                                          ("", "is empty")])
def test_cuda_archs_errors(value: str, found: str) -> None:
    with pytest.raises(AbistampError) as e:
        load(**{"cuda-archs": value})
    assert "config setting `abistamp.cuda-archs`" in str(e.value) and found in str(e.value)
    assert e.value.fix


def test_cuda_archs_from_pyproject_must_be_strings(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.abistamp]\ncuda-archs = [8.0, 9.0]\n")
    with pytest.raises(AbistampError) as e:
        Settings.load(tmp_path, None, {})
    assert "`tool.abistamp.cuda-archs` in `pyproject.toml`" in str(e.value)
    assert "quote numbers" in (e.value.fix or "")
    (tmp_path / "pyproject.toml").write_text('[tool.abistamp]\ncuda-archs = ["8.0", "9.0"]\n')
    assert Settings.load(tmp_path, None, {}).cuda_archs == "8.0;9.0"


def test_torch_arch_flags_become_an_arch_list_with_ptx_for_the_newest() -> None:
    flags = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert torch_archs(flags) == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    assert torch_archs(["sm_80", "compute_80", "sm_90a"]) == "8.0+PTX;9.0a+PTX"
    assert torch_archs([]) == ""


def test_archs_an_nvcc_lacks() -> None:
    cuda13 = {f"compute_{n}" for n in (75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121)}
    archs = Archs("6.0;7.0;7.5;9.0a;12.0+PTX;Hopper", "cuda-archs")
    assert unsupported_archs(archs, cuda13) == ["6.0", "7.0"]


def test_cuda_toolkit_choice(tmp_path: Path) -> None:
    cu130 = TorchABI("2.14.1", cuda="13.0")
    assert wants_wheels(load(**{"cuda-toolkit": "wheels"}), cu130, {}) is True
    assert wants_wheels(load(**{"cuda-toolkit": "system"}), cu130, {}) is False
    assert wants_wheels(load(**{"cuda-toolkit": "wheels"}), TorchABI("2.13.0+cpu"), {}) is False
    # `auto`: a CUDA_HOME is the user's choice, whatever is there; otherwise an nvcc of another
    # CUDA version than torch's means the wheels. The machine has one toolkit (13.0): an nvcc
    # that reports 12.4 is the only way to show the second.
    assert wants_wheels(load(), cu130, {"CUDA_HOME": "/nonexistent"}) is False
    other = tmp_path / "bin" / "nvcc"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    other.chmod(0o755)
    assert wants_wheels(load(), cu130, {"PATH": str(other.parent)}) is True
    assert toolkit_requirement("13.0") == "cuda-toolkit[nvcc,cccl]==13.0.*"
    assert requirement_cuda(toolkit_requirement("13.1")) == "13.1"
    assert requirement_cuda("cuda-toolkit[cublas]==13.0.3") is None


def test_cuda12_has_no_nvcc_wheel_and_the_error_names_the_routes() -> None:
    cu128 = TorchABI("2.9.0+cu128", cuda="12.8")
    with pytest.raises(AbistampError) as e:
        wants_wheels(load(**{"cuda-toolkit": "wheels"}), cu128, {})
    assert "config setting `abistamp.cuda-toolkit` is `wheels`" in str(e.value)
    fix = e.value.fix or ""
    for route in ("nvidia-cuda-nvcc-cu12", "CUDA_HOME", "conda's `cuda-nvcc=12.8`",
                  "`nvidia/cuda:12.8.*-devel`", 'cuda-toolkit = "system"'):
        assert route in fix, route
    assert wants_wheels(load(), cu128, {"PATH": ""}) is False


def test_progress_reads_the_compile_step_from_a_log() -> None:
    log = [
        "running build_ext",
        "building 'deepspeed.ops.adam.fused_adam_op' extension",
        "[1/3] c++ -MMD -MF x.o.d -c -c /src/csrc/adam/fused_adam_frontend.cpp -o /b/x.o -O3",
        ("[2/3] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c "
        "/src/csrc/adam/multi_tensor_adam.cu -o /b/multi_tensor_adam.cuda.o"),
        "some compiler warning",
    ]
    assert compile_step(log) == ("deepspeed.ops.adam.fused_adam_op", "[2/3] multi_tensor_adam.cu")
    assert compile_step(["[3/3] c++ /b/a.o /b/b.o -shared -o /b/op.so"],
                        "x", "[2/3] a.cu") == ("x", "[3/3] op.so")
    assert compile_step(["building 'y' extension"], "x", "[3/3] op.so") == ("y", "")


def test_an_isolated_build_without_torch_yet_asks_by_the_torch_settings_label(
        tmp_path: Path) -> None:
    """get_requires_for_build_wheel before torch is installed: the `torch` setting's local
    label is all there is to know its CUDA version by."""
    import importlib.util

    from abistamp.core.cuda import toolkit_request

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here; this is about a build environment without it")
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    wheels = {"cuda-toolkit": "wheels"}
    assert toolkit_request(load(torch="torch==2.14.1+cu130", **wheels), environ) == \
        "cuda-toolkit[nvcc,cccl]==13.0.*"
    assert toolkit_request(load(torch="torch==2.14.*", **wheels), environ) is None
    assert toolkit_request(load(torch="torch==2.13.0+cpu", **wheels), environ) is None
