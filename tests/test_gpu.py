"""On a machine with an NVIDIA GPU: DeepSpeed's fused Adam, prebuilt by `abistamp build` for the
visible GPU (`cuda-archs = native`), loads without a JIT compile and one FusedAdam step matches
`torch.optim.AdamW`.

Without a GPU this module is a visible skip (`pytest -ra` lists it), not a CI failure: CI has no
GPU, and the builds themselves are tested without one in test_cli_deepspeed.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .cli_support import cli
from .conftest import Env, clean_env, run, uv_bin
from .test_deepspeed import ds_sdist  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.cuda]

STEP = textwrap.dedent("""\
    import torch
    from deepspeed.ops.adam import FusedAdam
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    ref = torch.nn.Parameter(ours.detach().clone())
    grad = torch.randn(4096, device="cuda")
    fused = FusedAdam([ours], lr=1e-2, weight_decay=0.01, adam_w_mode=True)
    adamw = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.01)
    ours.grad, ref.grad = grad.clone(), grad.clone()
    fused.step()
    adamw.step()
    diff = (ours - ref).abs().max().item()
    assert diff < 1e-5, diff
    assert not torch.equal(ours.detach(), grad), "the step changed nothing"
    print("max difference", diff)
""")


def gpu_name() -> str | None:
    """The first GPU `nvidia-smi -L` lists, or None (no driver, no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    return lines[0] if out.returncode == 0 and lines else None


@pytest.fixture(scope="module")
def gpu() -> str:
    name = gpu_name()
    if name is None:
        pytest.skip("no NVIDIA GPU here (`nvidia-smi -L` lists none): the prebuilt fused Adam "
                    "op was not run; its build is tested in test_cli_deepspeed.py")
    return name


def test_prebuilt_fused_adam_steps_like_adamw(gpu: str, ds_sdist: Path,  # noqa: F811
                                              env214: Env, torch214_wheels: Path,
                                              tmp_path: Path) -> None:
    cli("build", ds_sdist, "--python", env214.python, "--env", "DS_BUILD_FUSED_ADAM=1",
        "-C", "abistamp.cuda-archs=native", "-o", tmp_path / "wh", "--work-dir", tmp_path / "w",
        timeout=1800)
    (wheel,) = (tmp_path / "wh").glob("*/*.whl")
    venv = tmp_path / "venv"
    run([uv_bin(), "venv", "-q", "-p", sys.executable, venv])
    python = venv / "bin" / "python"
    run([uv_bin(), "pip", "install", "-q", "-p", python, "--find-links", torch214_wheels,
         f"torch=={env214.torch}", wheel])
    extensions = tmp_path / "torch_extensions"
    result = run([python, "-c", STEP],
                 env=clean_env(TORCH_EXTENSIONS_DIR=str(extensions), DS_SKIP_CUDA_CHECK="0"))
    assert "max difference" in result.stdout, (gpu, result.stdout[-2000:])
    assert not extensions.exists() or not any(extensions.rglob("*.so")), "no JIT compile"
