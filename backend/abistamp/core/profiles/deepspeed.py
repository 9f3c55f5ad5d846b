"""DeepSpeed: what only DeepSpeed needs, with no edit to its setup.py.

- A CUDA (or ROCm) torch on a GPU-less builder: DeepSpeed would detect the `cpu` accelerator
  and its prebuilt CUDA ops would never be used; `DS_ACCELERATOR=cuda` fixes that.
- DeepSpeed turns ninja off unless `DS_ENABLE_NINJA` is set; abistamp sets it when ninja is
  there (55 s instead of 82 s for the CPU ops on two cores).
- After the build, `deepspeed/git_version_info_installed.py` in the wheel must record the torch
  the ABI record names; the ops it prebuilt and the CPU instruction sets its CPU ops assume go
  into the record.
"""

from __future__ import annotations

import ast
import importlib
import platform
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AbistampError

if TYPE_CHECKING:
    from ..abi import TorchABI
    from ..settings import Settings

INFO_MODULE = "deepspeed/git_version_info_installed.py"
# Ops compiled for the host CPU (`-march=native` and AVX detection in op_builder/builder.py).
CPU_OPS = frozenset({"cpu_adam", "cpu_adagrad", "cpu_lion", "deepspeed_shm_comm",
                     "deepspeed_ccl_comm", "async_io", "gds"})
# x86 instruction-set extensions that matter for code compiled with -march=native.
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl",
             "avx512dq", "avx512cd", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
             "amx_tile")


class DeepSpeed:
    name = "deepspeed"

    def matches(self, project: Path) -> bool:
        return ((project / "setup.py").is_file() and (project / "op_builder").is_dir()
                and (project / "deepspeed" / "__init__.py").is_file())

    def environ(self, project: Path, settings: Settings, abi: TorchABI,
                current: dict[str, str], facts: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        if (abi.cuda or abi.hip) and "DS_ACCELERATOR" not in current:
            env["DS_ACCELERATOR"] = "cuda"
        if facts.get("ninja") and "DS_ENABLE_NINJA" not in current:
            env["DS_ENABLE_NINJA"] = "1"
        build_string = sdist_build_string(project)
        if build_string and not current.get("DS_BUILD_STRING"):
            env["DS_BUILD_STRING"] = build_string
        return env

    def prepare(self, project: Path, settings: Settings, facts: dict[str, Any]
                ) -> Callable[[], None]:
        """With `portable-cpu`, compile CPU ops for x86-64-v3 instead of this builder's CPU.

        DeepSpeed's OpBuilder.cpu_arch() answers `-march=native` and simd_width() picks AVX-512
        when the builder has it: a wheel built on a new server can then die with an illegal
        instruction on an older one. setup.py runs in this process, so the patched class is the
        one it uses; nothing in the tree is edited.
        """
        if not settings.portable_cpu:
            return lambda: None
        if platform.machine() not in ("x86_64", "AMD64"):
            from ..errors import AbistampError

            raise AbistampError(
                f"{settings.origin('portable_cpu')} is set, but portable CPU flags are known for "
                f"x86-64 only (this is {platform.machine()})",
                "unset `portable-cpu` on this machine")
        sys.path.insert(0, str(project))
        builder = importlib.import_module("op_builder.builder")
        cls = builder.OpBuilder
        saved = cls.cpu_arch, cls.simd_width
        cls.cpu_arch = lambda self: "-march=" + PORTABLE["march"]
        cls.simd_width = lambda self: "-D__" + PORTABLE["simd"] + "__"
        facts["cpu"] = dict(PORTABLE)

        def undo() -> None:
            cls.cpu_arch, cls.simd_width = saved

        return undo

    def held_back_for_sdist(self, environ: dict[str, str]) -> list[str]:
        """`DS_BUILD_OPS` and `DS_BUILD_<OP>`: with one set, setup.py asserts torch ("Unable to
        pre-compile cpu_adam, please first install torch") even for an sdist, which compiles
        nothing. Held back there, they still reach the wheel built from the sdist, where they
        belong. `DS_BUILD_STRING` stays: it names the sdist's version."""
        return sorted(k for k in environ if k.startswith("DS_BUILD_") and k != "DS_BUILD_STRING")

    def verify(self, wheel: Path, abi: TorchABI, facts: dict[str, Any]) -> dict[str, Any]:
        found = wheel_facts(wheel, abi, required=True)
        assert found is not None
        cpu_ops = [op for op in found["installed_ops"] if op in CPU_OPS]
        return {
            **found,
            "cpu": (facts.get("cpu") or cpu_requirements()) if cpu_ops else None,
            "environ": {k: v for k, v in facts.get("environ", {}).items()
                        if k.startswith("DS_")},
        }


def wheel_facts(wheel: Path, abi: TorchABI, *, required: bool) -> dict[str, Any] | None:
    """What a DeepSpeed wheel recorded of its build, checked against the ABI.

    Raises when its torch_info names another torch; None (or an error, when required) when the
    wheel has no `git_version_info_installed.py`.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            source = zf.read(INFO_MODULE).decode("utf-8")
        except KeyError:
            if not required:
                return None
            raise AbistampError(
                f"the DeepSpeed wheel `{wheel.name}` has no `{INFO_MODULE}`",
                "build from a DeepSpeed source tree or sdist, or set `profile = \"none\"`",
            ) from None
    info = read_info(source)
    problems = torch_info_problems(info.get("torch_info") or {}, abi)
    if problems:
        raise AbistampError(
            f"DeepSpeed recorded a different torch than the ABI stamped on `{wheel.name}` "
            f"({'; '.join(problems)}) in `{INFO_MODULE}`",
            "build (or stamp) it with the torch it was compiled against; when building, make "
            "sure setup.py imports the same torch as the build environment",
        )
    return {
        "name": "deepspeed",
        "accelerator_name": info.get("accelerator_name"),
        "torch_info": info.get("torch_info"),
        "installed_ops": sorted(k for k, v in (info.get("installed_ops") or {}).items() if v),
    }


def sdist_build_string(project: Path) -> str | None:
    """The `DS_BUILD_STRING` that makes setup.py reproduce the version of the sdist it is in.

    An sdist made from a git checkout declares `0.19.8+<hash>` but carries no build.txt, and
    the unpacked sdist is no git repository: setup.py would say `0.19.8+unknown`, and uv refuses
    the wheel ("The source distribution declares version ..."). The hash is in PKG-INFO.
    """
    pkg_info = project / "PKG-INFO"
    if not pkg_info.is_file() or (project / "build.txt").is_file():
        return None
    from packaging.version import InvalidVersion, Version

    for line in pkg_info.read_text(encoding="utf-8").splitlines():
        if line.startswith("Version:"):
            try:
                local = Version(line.split(":", 1)[1].strip()).local
            except InvalidVersion:
                return None
            return f"+{local}" if local else None
        if not line.strip():
            break
    return None


def read_info(source: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def torch_info_problems(torch_info: dict[str, Any], abi: TorchABI) -> list[str]:
    problems = []
    if torch_info.get("version") != f"{abi.major}.{abi.minor}":
        problems.append(f"torch_info version {torch_info.get('version')!r}, build torch "
                        f"{abi.major}.{abi.minor}")
    cuda = ".".join(abi.cuda.split(".")[:2]) if abi.cuda else "0.0"
    if torch_info.get("cuda_version", "0.0") != cuda:
        problems.append(f"torch_info cuda_version {torch_info.get('cuda_version')!r}, build "
                        f"CUDA {cuda}")
    hip = ".".join(abi.hip.split(".")[:2]) if abi.hip else "0.0"
    if torch_info.get("hip_version", "0.0") != hip:
        problems.append(f"torch_info hip_version {torch_info.get('hip_version')!r}, build "
                        f"HIP {hip}")
    return problems


def host_cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# x86-64-v3: AVX2, FMA, BMI2, F16C; every x86-64 server CPU since about 2015.
PORTABLE: dict[str, Any] = {
    "machine": "x86_64",
    "march": "x86-64-v3",
    "simd": "AVX256",
    "flags": ["avx", "avx2", "bmi2", "f16c", "fma", "sse4_2"],
}


def cpu_requirements() -> dict[str, Any]:
    """What DeepSpeed's CPU ops assume of the CPU: -march=native of this builder."""
    flags = host_cpu_flags()
    return {
        "machine": platform.machine(),
        "march": "native",
        "simd": "AVX512" if "avx512f" in flags else "AVX256" if "avx2" in flags else "SCALAR",
        "flags": sorted(f for f in X86_FLAGS if f in flags),
    }
