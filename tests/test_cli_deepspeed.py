"""DeepSpeed 0.19.8 from the package registry through `abistamp build deepspeed==0.19.8`: a
third-party setup.py project with no pyproject.toml, fetched through the simple repository API
(no setup.py runs to fetch it), built for two torches, each with an op compiled for real:

- torch 2.13.0+cpu: the CPU Adam op, with `DS_BUILD_CPU_ADAM=1` exported in the calling shell as
  a CI job does, for x86-64-v3 (`portable-cpu`);
- torch 2.14.1+cu130 on this GPU-less builder: fused Adam (`--env DS_BUILD_FUSED_ADAM=1`), no
  arch list given, so for every arch of the target torch, by nvcc from NVIDIA's toolkit wheels
  (`-C abistamp.cuda-toolkit=wheels`, the folder abistamp keeps per CUDA version) with the
  machine's toolkit hidden in a mount namespace, so that nothing of it can be used: issue 16's
  "done when" command, in one build. What lands in the library is read back with `cuobjdump`
  (test_cuda_builds.py has the helpers; the machine's nvcc is tiny-ext's, test_tiny_ext.py).

Then a uv project switches between the two wheels of the wheelhouse, `check` on matched,
mismatched and unstamped installs, `inspect`, and `stamp` refusing a wrong ABI.

The two builds run at once, into one wheelhouse, as two `abistamp build` processes.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from .cli_support import (
    ABISTAMP,
    cli,
    fresh_env,
    manifest,
    network_used,
    summary_rows,
    traced_cli,
)
from .conftest import CACHE, Env, clean_env, read_record, run, simple_index, uv_bin
from .test_cuda_builds import (
    ANSI,
    TOOLKIT_REQ,
    XDG_CACHE,
    build_env,
    cuobjdump,
    gpu_code,
    hidden_toolkit,
    member,
    torch_archs,
)
from .test_deepspeed import TORCH_URLS, example_project, project_env, switch_extras

pytestmark = [pytest.mark.slow, pytest.mark.cuda]
DS = "deepspeed==0.19.8"
CPU = "deepspeed-0.19.8+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl"
CUDA = "deepspeed-0.19.8+pt214cu130-1pt214cu130-cp311-cp311-linux_x86_64.whl"
CPU_SHELL = clean_env(DS_BUILD_CPU_ADAM="1")
FUSED_ADAM = "/fused_adam_op.cpython-311-x86_64-linux-gnu.so"
__all__ = ["cuobjdump"]  # the session fixture, shared with test_cuda_builds.py


@pytest.fixture(scope="module")
def ds_wh(tmp_path_factory: pytest.TempPathFactory, torch213_wheels: Path,
          torch214_wheels: Path) -> tuple[Path, list[str], str]:
    """The wheelhouse, the CPU variant's command, and the CUDA variant's stderr (piped, as in
    CI)."""
    base = tmp_path_factory.mktemp("ds")
    wheelhouse = base / "wh"
    sdists = ["--cache-dir", str(CACHE / "sdists")]
    # `portable-cpu`: the CPU op is compiled for x86-64-v3, not this builder's CPU
    # (test_deepspeed_flags.py builds with the default, -march=native).
    cpu = [*ABISTAMP, "build", DS, "--torch", "torch==2.13.0", "-f", str(torch213_wheels),
           "-C", "abistamp.portable-cpu=true",
           "-o", str(wheelhouse), "--work-dir", str(base / "w"), *sdists]
    cuda = hidden_toolkit([*ABISTAMP, "build", DS, "--torch", "torch==2.14.1", "-f",
                           str(torch214_wheels), "--env", "DS_BUILD_FUSED_ADAM=1",
                           "-C", "abistamp.cuda-toolkit=wheels", "-o", str(wheelhouse),
                           "--work-dir", str(base / "w"), *sdists], base / "empty")
    # The CPU variant's switch is exported in the calling shell, not passed with --env.
    procs = [subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for cmd, env in ((cpu, CPU_SHELL), (cuda, build_env()))]
    outs = [p.communicate(timeout=2400) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        if proc.returncode != 0 and ("no sdist of" in err or "could not download" in err):
            from .conftest import need

            need(False, f"could not fetch {DS}: {err[-300:]}")
        assert proc.returncode == 0, (out, err)
    assert summary_rows(outs[0][0])["torch==2.13.0"][:3] == ["built", "pt213cpu", CPU]
    assert summary_rows(outs[1][0])["torch==2.14.1"][:3] == ["built", "pt214cu130", CUDA]
    return wheelhouse, cpu, outs[1][1]


def test_two_stamped_deepspeed_wheels(ds_wh: tuple[Path, list[str], str]) -> None:
    wheelhouse, _, _ = ds_wh
    cpu, cuda = read_record(wheelhouse / "pt213cpu" / CPU), read_record(
        wheelhouse / "pt214cu130" / CUDA)
    assert cpu["profile"]["torch_info"]["version"] == "2.13"
    assert cpu["profile"]["installed_ops"] == ["cpu_adam"]
    assert cpu["profile"]["cpu"]["flags"], "CPU ops record the instruction sets they assume"
    # portable-cpu reached DeepSpeed's own op builder: its compile used the portable flags.
    assert (cpu["profile"]["cpu"]["machine"], cpu["profile"]["cpu"]["march"]) == (
        "x86_64", "x86-64-v3")
    logs = sorted((wheelhouse.parent / "w" / "logs").glob("*.log"))  # one per variant
    compiles = [ln for log in logs for ln in log.read_text().splitlines()
                if "cpu_adam" in ln and ".cpp" in ln and " -c " in ln]
    assert compiles and all("-march=x86-64-v3" in ln and "-march=native" not in ln
                            for ln in compiles), compiles[:1]
    assert cuda["profile"]["torch_info"]["version"] == "2.14"
    assert cuda["profile"]["torch_info"]["cuda_version"] == "13.0"
    assert cuda["profile"]["accelerator_name"] == "cuda"  # GPU-less builder, CUDA torch
    entries = {e["label"]: e for e in manifest(wheelhouse)["variants"].values()}
    assert entries["pt213cpu"]["source"]["kind"] == "requirement"
    assert entries["pt213cpu"]["source"]["spec"] == DS
    assert entries["pt213cpu"]["source"]["digest"].startswith("sha256:")
    assert entries["pt213cpu"]["environment"] == {"DS_BUILD_CPU_ADAM": "1"}
    assert entries["pt213cpu"]["source"]["url"].endswith("/deepspeed-0.19.8.tar.gz")
    assert entries["pt213cpu"]["source"]["checked"] == "sha256 from the index verified"
    assert entries["pt213cpu"]["source"]["sha256"] == \
        entries["pt213cpu"]["source"]["digest"].removeprefix("sha256:")


def test_fused_adam_for_every_arch_by_the_toolkit_wheels_alone(
        ds_wh: tuple[Path, list[str], str], env214: Env, cuobjdump: Path, tmp_path: Path) -> None:
    """No arch list given: the target torch's own, each arch a cubin, PTX for the newest, by the
    nvcc of the kept toolkit folder (the machine's was hidden). The output went through pipes,
    as in CI: progress came as plain lines, no terminal codes."""
    wheelhouse, _, stderr = ds_wh
    expected = torch_archs(env214)  # the same torch 2.14.1 wheel the variant was built with
    wheel = wheelhouse / "pt214cu130" / CUDA
    record = read_record(wheel)
    assert record["cuda_arch_list"] == ";".join(expected[:-1] + [expected[-1] + "+PTX"])
    assert record["cuda_arch_source"] == "torch"
    assert record["cuda_toolkit"]["source"] == "abistamp-cache"
    assert record["cuda_toolkit"]["requirement"] == TOOLKIT_REQ
    assert record["cuda_toolkit"]["version"].startswith("13.0.")
    kept = XDG_CACHE / "abistamp" / "cuda-toolkit" / "13.0"
    assert json.loads((kept / "abistamp-toolkit.json").read_text())["requirement"] == TOOLKIT_REQ
    logs = [log.read_text() for log in (wheelhouse.parent / "w" / "logs").glob("*.log")]
    assert any(f"{kept}/nvidia/cu13/bin/nvcc" in log for log in logs)
    assert "nvidia/cu13/include" in record["cuda_headers"]
    assert record["compiled_cuda"] is True
    assert record["profile"]["installed_ops"] == ["fused_adam"]
    entries = {e["label"]: e for e in manifest(wheelhouse)["variants"].values()}
    assert entries["pt214cu130"]["environment"] == {"DS_BUILD_FUSED_ADAM": "1"}
    cubins, ptx = gpu_code(member(wheel, FUSED_ADAM), tmp_path, cuobjdump)
    as_sm = [f"sm_{a.replace('.', '')}" for a in expected]
    assert cubins == set(as_sm), cubins
    assert ptx == {as_sm[-1]}, ptx
    # Plain progress lines name the extension, the ninja step and the time; no terminal codes.
    steps = [ln for ln in stderr.splitlines()
             if "building 'deepspeed.ops.adam.fused_adam_op'" in ln]
    assert any(re.search(r"\[\d+/\d+\] \S+, (\d+m)?\d+s$", ln) for ln in steps), stderr[-3000:]
    assert ANSI not in stderr


def test_uv_project_switches_between_the_wheelhouse_builds(
        ds_wh: tuple[Path, list[str], str], torch213_wheels: Path, torch214_wheels: Path,
        tmp_path: Path) -> None:
    """examples/deepspeed/wheelhouse-project on this wheelhouse: each extra gets the DeepSpeed
    built for its torch, with no build; in the cpu one the prebuilt CPU Adam op steps."""
    wheelhouse = ds_wh[0]
    indexes = {"cpu": simple_index(torch213_wheels), "cu130": simple_index(torch214_wheels)}
    project = example_project(
        "wheelhouse-project", tmp_path / "app",
        {**{url: indexes[k] for url, k in TORCH_URLS.items()},
         "https://wheels.example.com/deepspeed/pt213cpu/": wheelhouse / "pt213cpu",
         "https://wheels.example.com/deepspeed/pt214cu130/": wheelhouse / "pt214cu130"},
        indexes["cu130"])
    python = switch_extras(project, built_expected=False)

    # In the cpu environment, the prebuilt CPU Adam op loads and steps with no JIT compile.
    run([uv_bin(), "sync", "--extra", "cpu"], cwd=project, env=project_env(project))
    env = project_env(project)
    ext_dir = tmp_path / "torch_extensions"
    step = run([python, "-c", textwrap.dedent("""\
        import torch
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        p = torch.nn.Parameter(torch.ones(8))
        opt = DeepSpeedCPUAdam([p], lr=0.1)
        p.grad = torch.ones(8)
        opt.step()
        assert float(p.detach().max()) < 1.0, p
        print("stepped", float(p.detach().max()))
        """)], env={**env, "TORCH_EXTENSIONS_DIR": str(ext_dir)})
    assert "stepped" in step.stdout
    assert not ext_dir.exists() or not any(ext_dir.rglob("*.so")), "no JIT build"


def test_a_release_in_the_wheelhouse_is_skipped_without_the_network(
        ds_wh: tuple[Path, list[str], str], tmp_path: Path) -> None:
    """Its time is a benchmark row (docs/performance.md); the test holds why it is fast: no
    process started (no pip, no uv, no interpreter), no torch imported, no connection made."""
    args = ds_wh[1][len(ABISTAMP):]
    trace = tmp_path / "trace.json"
    # The switch exported as when it was built, and an index that would fail if it were asked.
    result, spawned, torch_imported = traced_cli(
        trace, *args, env={**CPU_SHELL, "PIP_INDEX_URL": "http://127.0.0.1:9/nowhere"})
    assert summary_rows(result.stdout)["torch==2.13.0"][0] == "skipped"
    assert spawned == [] and not torch_imported, spawned
    assert network_used(trace) == []
    assert "fetching" not in result.stderr and "downloading" not in result.stderr


@pytest.fixture(scope="module")
def mismatched(ds_wh: tuple[Path, list[str], str], torch214_wheels: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch 2.14.1 with the DeepSpeed built for torch 2.13 (as uv's build cache makes it)."""
    env = fresh_env(tmp_path_factory.mktemp("ds-bad") / "env", torch214_wheels, "torch==2.14.1")
    run([uv_bin(), "pip", "install", "-q", "-p", env.python, "--no-deps",
         ds_wh[0] / "pt213cpu" / CPU])
    return env.python


def test_check_passes_a_matched_environment(ds_wh: tuple[Path, list[str], str],
                                            torch213_wheels: Path, tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0")
    run([uv_bin(), "pip", "install", "-q", "-p", env.python, "--no-deps",
         ds_wh[0] / "pt213cpu" / CPU])
    result, spawned, torch_imported = traced_cli(tmp_path / "trace.json", "check", "--python",
                                                 env.python)
    assert re.search(r"deepspeed\s+0\.19\.8\+pt213cpu\s+torch 2\.13\.0\+cpu \(cpu\)\s+ok",
                     result.stdout), result.stdout
    # Read from the environment's files: its interpreter is never started, torch never imported
    # (nvidia-smi is asked only on a machine that has one, for the GPU's arch).
    assert [cmd for cmd in spawned if "nvidia-smi" not in cmd[0]] == [], spawned
    assert not torch_imported
    assert network_used(tmp_path / "trace.json") == []


def test_check_finds_deepspeed_built_for_another_torch(mismatched: Path) -> None:
    result = cli("check", "--python", mismatched, check=False)
    assert result.returncode == 1
    assert "deepspeed: built for torch 2.13.0+cpu, installed torch is 2.14.1" in result.stdout
    assert "deepspeed: DeepSpeed torch_info version '2.13', installed torch 2.14" in \
        result.stdout
    data = json.loads(cli("check", "--python", mismatched, "--json", check=False).stdout)
    (finding,) = data["results"]
    assert finding["status"] == "MISMATCH" and finding["source"] == "abistamp.json"


def test_check_reads_torch_info_of_an_unstamped_deepspeed(mismatched: Path) -> None:
    """The same install without abistamp's record: DeepSpeed's own build record still tells."""
    (record,) = mismatched.parent.parent.glob("lib/python3*/site-packages/deepspeed-*"
                                              ".dist-info/abistamp.json")
    record.unlink()
    result = cli("check", "--python", mismatched, check=False)
    assert result.returncode == 1
    assert re.search(r"deepspeed\s+0\.19\.8\+pt213cpu\s+torch 2\.13 \(cuda 0\.0\)\s+MISMATCH",
                     result.stdout), result.stdout
    data = json.loads(cli("check", "--python", mismatched, "--json", check=False).stdout)
    assert data["results"][0]["source"] == "deepspeed torch_info"


def test_inspect_shows_the_profile(ds_wh: tuple[Path, list[str], str]) -> None:
    out = cli("inspect", ds_wh[0] / "pt213cpu" / CPU).stdout
    assert "  profile       deepspeed: ops cpu_adam; torch_info 2.13 cuda 0.0\n" in out
    assert "  cpu           x86_64 -march=x86-64-v3 (" in out


def test_stamp_refuses_the_abi_of_another_torch(ds_wh: tuple[Path, list[str], str], tmp_path: Path
                                                ) -> None:
    wheelhouse = ds_wh[0]
    result = cli("stamp", wheelhouse / "pt213cpu" / CPU, "--abi-from",
                 wheelhouse / "pt214cu130" / CUDA, "-o", tmp_path, check=False)
    assert result.returncode == 2
    assert "DeepSpeed recorded a different torch than the ABI stamped on" in result.stderr
    assert not list(tmp_path.glob("*.whl"))
