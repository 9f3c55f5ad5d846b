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

import importlib
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpu import PORTABLE, native_requirements
from ..errors import AbistampError
from ..literals import read_constants, read_module_constants
from . import Installed, installed_file

if TYPE_CHECKING:
    from ..abi import TorchABI
    from ..facts import BuildFacts
    from ..settings import Settings
    from ..stamp import WheelInfo

INFO_MODULE = "deepspeed/git_version_info_installed.py"
# Ops compiled for the host CPU (`-march=native` and AVX detection in op_builder/builder.py).
CPU_OPS = frozenset({"cpu_adam", "cpu_adagrad", "cpu_lion", "deepspeed_shm_comm",
                     "deepspeed_ccl_comm", "async_io", "gds"})


class DeepSpeed:
    name = "deepspeed"
    build_environ = ("DS_BUILD_", "DS_ACCELERATOR", "DS_ENABLE_NINJA")
    wheel_files = (INFO_MODULE,)

    def matches(self, project: Path) -> bool:
        return ((project / "setup.py").is_file() and (project / "op_builder").is_dir()
                and (project / "deepspeed" / "__init__.py").is_file())

    def environ(self, project: Path, settings: Settings, abi: TorchABI,
                current: dict[str, str], facts: BuildFacts) -> dict[str, str]:
        env: dict[str, str] = {}
        if (abi.cuda or abi.hip) and "DS_ACCELERATOR" not in current:
            env["DS_ACCELERATOR"] = "cuda"
        if facts.ninja and "DS_ENABLE_NINJA" not in current:
            env["DS_ENABLE_NINJA"] = "1"
        build_string = sdist_build_string(project)
        if build_string and not current.get("DS_BUILD_STRING"):
            env["DS_BUILD_STRING"] = build_string
        return env

    def prepare(self, project: Path, settings: Settings, facts: BuildFacts
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
        facts.cpu = dict(PORTABLE)

        def undo() -> None:
            cls.cpu_arch, cls.simd_width = saved

        return undo

    def held_back_for_sdist(self, environ: dict[str, str]) -> list[str]:
        """`DS_BUILD_OPS` and `DS_BUILD_<OP>`: with one set, setup.py asserts torch ("Unable to
        pre-compile cpu_adam, please first install torch") even for an sdist, which compiles
        nothing. Held back there, they still reach the wheel built from the sdist, where they
        belong. `DS_BUILD_STRING` stays: it names the sdist's version."""
        return sorted(k for k in environ if k.startswith("DS_BUILD_") and k != "DS_BUILD_STRING")

    def verify(self, wheel: WheelInfo, abi: TorchABI, facts: BuildFacts) -> dict[str, Any]:
        found = wheel_facts(wheel, abi, required=True)
        assert found is not None
        cpu_ops = [op for op in found["installed_ops"] if op in CPU_OPS]
        return {
            **found,
            "cpu": (facts.cpu or native_requirements()) if cpu_ops else None,
            "environ": {k: v for k, v in facts.environ.items()
                        if k.startswith("DS_")},
        }


    # --- outside any build ----------------------------------------------------------------

    def finished_wheel(self, wheel: WheelInfo, abi: TorchABI) -> dict[str, Any] | None:
        found = wheel_facts(wheel, abi, required=False)
        if found is None:
            return None
        return {
            **found,
            # What -march its CPU ops were compiled with is not in the wheel: unknown.
            "cpu": None,
            "cpu_ops_unknown_flags": [op for op in found["installed_ops"] if op in CPU_OPS]
            or None,
            "environ": {},
        }

    def own_record(self, wheel: WheelInfo) -> dict[str, Any] | None:
        if INFO_MODULE not in wheel.files:
            return None
        info = read_info(wheel.files[INFO_MODULE].decode("utf-8"))
        return {"torch_info": info.get("torch_info"),
                "installed_ops": sorted(k for k, v in (info.get("installed_ops") or {}).items()
                                        if v)}

    def describe(self, data: dict[str, Any], *, own: bool) -> str:
        ti = data.get("torch_info") or {}
        torch_info = f"torch_info {ti.get('version')} cuda {ti.get('cuda_version')}"
        ops = ", ".join(data.get("installed_ops") or []) or "none"
        return f"{torch_info}; ops {ops}" if own else f"ops {ops}; {torch_info}"

    def installed(self, sites: list[Path], torch: TorchABI | None) -> Installed | None:
        info_file = installed_file(sites, "deepspeed", Path(INFO_MODULE).name)
        if info_file is None:
            return None
        values = read_module_constants(info_file)
        torch_info = values.get("torch_info") if isinstance(values.get("torch_info"), dict) \
            else {}
        assert isinstance(torch_info, dict)
        return Installed(
            source="deepspeed torch_info", location=info_file,
            built_for=(f"torch {torch_info.get('version')} (cuda {torch_info.get('cuda_version')})"
                       if torch_info else "unknown"),
            known=bool(torch_info), problems=installed_problems(torch_info, torch),
            fix="install a DeepSpeed built for the installed torch (abistamp build "
                "deepspeed==VERSION --torch torch==X), or rebuild it with --no-build-isolation "
                "against this torch; uv users: extra-build-dependencies with match-runtime "
                "(docs/deepspeed.md)",
            version=str(values.get("version", "?")))


PROFILE = DeepSpeed()


def wheel_facts(wheel: WheelInfo, abi: TorchABI, *, required: bool) -> dict[str, Any] | None:
    """What a DeepSpeed wheel recorded of its build, checked against the ABI.

    Raises when its torch_info names another torch; None (or an error, when required) when the
    wheel has no `git_version_info_installed.py`.
    """
    if INFO_MODULE not in wheel.files:
        if not required:
            return None
        raise AbistampError(
            f"the DeepSpeed wheel `{wheel.path.name}` has no `{INFO_MODULE}`",
            "build from a DeepSpeed source tree or sdist, or set `profile = \"none\"`",
        )
    info = read_info(wheel.files[INFO_MODULE].decode("utf-8"))
    problems = torch_info_problems(info.get("torch_info") or {}, abi)
    if problems:
        raise AbistampError(
            f"DeepSpeed recorded a different torch than the ABI stamped on `{wheel.path.name}` "
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
    return read_constants(source, INFO_MODULE)


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


def installed_problems(torch_info: dict[str, Any], torch: TorchABI | None) -> list[str]:
    """An installed DeepSpeed's torch_info against the installed torch."""
    if not torch_info:
        return []
    if torch is None:
        built = torch_info.get("version")
        return [f"DeepSpeed was built for torch {built}, but torch is not installed"]
    if str(torch_info.get("version")) == "0.0":
        return []  # built without torch: no ops compiled, nothing to go stale
    # DeepSpeed checks its prebuilt ops against torch's major.minor, CUDA and HIP at load.
    return [f"DeepSpeed {p.replace('build ', 'installed ')}"
            for p in torch_info_problems(torch_info, torch)]
