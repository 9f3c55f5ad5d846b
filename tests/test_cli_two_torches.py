"""Two ABIs in one wheelhouse: tiny-ext for torch 2.13.0+cpu and for the CUDA 13.0 build of
torch 2.14.1, each compiled for real (by the session's two build runs, merged); a uv project
switching between them through the configuration `abistamp uv-config` prints; `check` passing
the matched environments and failing a mismatched one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .cli_support import cli, copy_wheelhouse, manifest, summary_rows
from .conftest import Result, run, uv_bin

pytest_plugins = ["tests.cli_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.cuda]

CPU = "tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl"
CUDA = "tiny_ext-0.3.0+pt214cu130-1pt214cu130-cp311-cp311-linux_x86_64.whl"
RUN_OP = ("import json, torch, tiny_ext; print(json.dumps([tiny_ext.scale_add(torch.arange(3.0), "
          "2.0).tolist(), tiny_ext.compiled_torch_version(), torch.__version__]))")


@pytest.fixture(scope="module")
def two_abis(tiny_wheelhouse: tuple[Path, Path, Result],
             tiny_wheelhouse_214: tuple[Path, Result],
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's torch 2.13 wheelhouse, copied, plus the torch 2.14.1 variant that the
    session built in a run of its own, merged in by `abistamp index` (one compile per ABI for
    the whole suite)."""
    wheelhouse_214, result = tiny_wheelhouse_214
    assert summary_rows(result.stdout)["torch==2.14.1"][:3] == ["built", "pt214cu130", CUDA]
    base = tmp_path_factory.mktemp("two-abis")
    wheelhouse = copy_wheelhouse(tiny_wheelhouse[0], base / "wh")
    cli("index", wheelhouse_214, "-o", wheelhouse)
    return wheelhouse


def test_one_folder_per_abi(two_abis: Path) -> None:
    assert sorted(p.name for p in two_abis.glob("*/*.whl")) == [CPU, CUDA]
    assert {e["label"] for e in manifest(two_abis)["variants"].values()} == {"pt213cpu",
                                                                             "pt214cu130"}
    top = (two_abis / "index.html").read_text()
    assert '<a href="pt213cpu/">' in top and '<a href="pt214cu130/">' in top


def test_uv_project_switches_between_the_abis(two_abis: Path, torch213_wheels: Path,
                                              torch214_wheels: Path, tmp_path: Path) -> None:
    config = cli("uv-config", two_abis, "--extra", "cpu=pt213cpu", "--extra",
                 "cu130=pt214cu130").stdout
    assert 'conflicts = [[{ extra = "cpu" }, { extra = "cu130" }]]' in config
    assert 'cpu = ["torch==2.13.0+cpu", "tiny-ext"]' in config
    assert 'cu130 = ["torch==2.14.1", "tiny-ext"]' in config
    app = tmp_path / "app"
    app.mkdir()
    # torch 2.14.1's own dependencies (nvidia-*, triton) come from the local folder too, as a
    # last, non-explicit index: nothing is fetched from the registry.
    local = (f'\n[[tool.uv.index]]\nname = "local-torch-deps"\nurl = '
             f'"{torch214_wheels.resolve().as_uri()}"\nformat = "flat"\n')
    (app / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = "==3.11.*"\n'
        f"dependencies = []\n\n{config}{local}")
    run([uv_bin(), "lock"], cwd=app)
    python = app / ".venv" / "bin" / "python"
    for extra, wheel, torch in (("cpu", CPU, "2.13.0+cpu"), ("cu130", CUDA, "2.14.1+cu130"),
                                ("cpu", CPU, "2.13.0+cpu")):
        sync = run([uv_bin(), "sync", "--extra", extra], cwd=app)
        assert "Built" not in sync.output, "switching installs prebuilt wheels, never builds"
        values, compiled, version = json.loads(run([python, "-c", RUN_OP]).stdout)
        assert values == [1.0, 3.0, 5.0] and version == torch
        assert torch.startswith(compiled), (compiled, torch)
        check = cli("check", "--python", python)
        label = wheel.split("+")[1].split("-")[0]
        row = rf"tiny-ext\s+0\.3\.0\+{label}\s.*\sok$"
        assert re.search(row, check.stdout, re.MULTILINE), check.stdout


def test_check_fails_a_wheel_of_the_other_abi(two_abis: Path, torch214_wheels: Path,
                                              tmp_path: Path) -> None:
    from .cli_support import fresh_env

    env = fresh_env(tmp_path / "env", torch214_wheels, "torch==2.14.1")
    run([uv_bin(), "pip", "install", "-q", "-p", env.python, "--no-deps",
         two_abis / "pt213cpu" / CPU])
    result = cli("check", "--python", env.python, check=False)
    assert result.returncode == 1, result.output
    assert "torch:   2.14.1 (cu130)" in result.stdout
    assert "tiny-ext: built for torch 2.13.0+cpu, installed torch is 2.14.1" in result.stdout


def test_check_finds_an_editable_install_gone_stale_after_a_torch_switch(
        torch213_wheels: Path, torch214_wheels: Path, tmp_path: Path) -> None:
    """An editable install compiled in place against torch 2.13; then torch is upgraded under
    it, as `uv pip install torch==...` does. Its files are stale: check must say so."""
    from .cli_support import fresh_env
    from .conftest import DATA, copy_project

    probe = copy_project(DATA / "probe", tmp_path / "probe")
    env = fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0", "setuptools>=64",
                    "packaging>=22")
    run([uv_bin(), "pip", "install", "-q", "-p", env.python, "--no-build-isolation", "-e",
         probe])
    assert re.search(r"abistamp-probe \(editable\)\s+1\.0\.0\s+torch 2\.13\.0\+cpu \(cpu\)\s+ok",
                     cli("check", "--python", env.python).stdout)
    run([uv_bin(), "pip", "install", "-q", "-p", env.python, "-f", torch214_wheels,
         "torch==2.14.1"])
    result = cli("check", "--python", env.python, check=False)
    assert result.returncode == 1
    assert "abistamp-probe: built for torch 2.13.0+cpu, installed torch is 2.14.1" in \
        result.stdout
    assert "fix: rebuild abistamp-probe in place against the installed torch" in result.stdout


def test_inspect_says_a_cuda_torch_wheel_came_out_cpu_only(two_abis: Path) -> None:
    """tiny-ext compiles its CUDA kernel only with TINY_EXT_CUDA=1, as PyG's projects do only
    with a GPU visible or FORCE_CUDA=1: built against the CUDA torch without it, the wheel has
    no CUDA code, and `inspect` says so (the record knows no CUDA source was compiled)."""
    note = "CPU-only: torch is a CUDA build but no CUDA sources were compiled"
    cuda = cli("inspect", two_abis / "pt214cu130" / CUDA).stdout
    assert "compiled CUDA: False" in cuda and f"  notes         {note}" in cuda, cuda
    assert note not in cli("inspect", two_abis / "pt213cpu" / CPU).stdout
