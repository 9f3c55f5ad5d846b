"""What torch, accelerator, C++ ABI, arch list and nvcc a build sees, as one value object.

Two ways to read it: :func:`detect` imports the torch of the running interpreter (the build
process, where the compile happens anyway), and :func:`read_installed` reads an environment's
files without importing torch (fast enough for ``abistamp check``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .errors import AbistampError
from .literals import read_module_constants

TORCH_MISSING_FIX = (
    "torch must be importable where the extension is compiled. Under build isolation the "
    "frontend makes a fresh environment that lacks it; either (1) declare it: "
    '`[tool.abistamp] torch = "torch==2.13.*"` in pyproject.toml (or `-C abistamp.torch=...`), '
    "(2) with uv, let the build use the project's torch: `[tool.uv] extra-build-dependencies = "
    '{ PKG = [{ requirement = "torch", match-runtime = true }] }`, or (3) build in an '
    "environment that has torch with `--no-build-isolation`"
)


@dataclasses.dataclass(frozen=True)
class TorchABI:
    """The ABI of one torch, as a build compiles against it."""

    torch_version: str  # distribution version: "2.13.0+cpu", "2.14.1"
    cuda: str | None = None  # torch.version.cuda: "13.0"
    hip: str | None = None  # torch.version.hip: "6.2.41133"
    cxx11abi: bool | None = None  # None when read without importing torch
    cuda_arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST as the build saw it
    nvcc: str | None = None  # "13.0" when CUDA code is in play and nvcc was found

    @property
    def release(self) -> tuple[int, ...]:
        from packaging.version import Version

        return Version(self.torch_version).release

    @property
    def major(self) -> int:
        return self.release[0]

    @property
    def minor(self) -> int:
        return self.release[1] if len(self.release) > 1 else 0

    @property
    def patch(self) -> int:
        return self.release[2] if len(self.release) > 2 else 0

    @property
    def public_version(self) -> str:
        from packaging.version import Version

        return Version(self.torch_version).public

    @property
    def local(self) -> str | None:
        from packaging.version import Version

        return Version(self.torch_version).local

    @property
    def accelerator(self) -> str:
        """`cpu`, `cu130`, `rocm6.2`: torch's own naming for its variants."""
        if self.hip:
            return "rocm" + ".".join(self.hip.split(".")[:2])
        if self.cuda:
            return "cu" + self.cuda.replace(".", "")
        return "cpu"

    def same_abi(self, other: TorchABI) -> bool:
        """Whether code compiled against one loads against the other: same torch build."""
        return (self.torch_version, self.accelerator) == (other.torch_version, other.accelerator)


def detect(environ: dict[str, str] | None = None) -> TorchABI:
    """Import the torch this interpreter would compile against and describe it."""
    from importlib import metadata

    environ = dict(os.environ) if environ is None else environ
    try:
        import torch  # only here, and only when a build needs it
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise AbistampError(
                f"torch is installed but importing it failed: {e}",
                f"install the module `{e.name}` that torch needs, or reinstall torch",
            ) from None
        raise AbistampError("torch is not importable in the build environment",
                            TORCH_MISSING_FIX) from None
    except Exception as e:  # noqa: BLE001 - any import failure of torch is the user's to see
        raise AbistampError(
            f"torch is installed but `import torch` raised {type(e).__name__}: {e}",
            "repair or reinstall torch in the build environment",
        ) from None
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        raise AbistampError(
            f"`import torch` works (from {Path(torch.__file__).parent}) but no torch "
            "distribution metadata (`torch-*.dist-info`) was found beside it",
            "install torch with pip or uv rather than copying it",
        ) from None
    cuda = getattr(torch.version, "cuda", None)
    hip = getattr(torch.version, "hip", None)
    cxx11 = getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", None)
    return TorchABI(
        torch_version=version,
        cuda=cuda,
        hip=hip,
        cxx11abi=None if cxx11 is None else bool(cxx11),
        cuda_arch_list=environ.get("TORCH_CUDA_ARCH_LIST") or None,
    )


def read_installed(site_dirs: list[Path]) -> TorchABI | None:
    """The ABI of the torch installed in these site-packages folders, without importing it."""
    for site in site_dirs:
        version_py = site / "torch" / "version.py"
        if not version_py.is_file():
            continue
        dist_version = None
        for meta in sorted(site.glob("torch-*.dist-info")):
            dist_version = _metadata_version(meta / "METADATA")
            if dist_version:
                break
        if dist_version is None:
            continue
        values = read_module_constants(version_py)
        return TorchABI(
            torch_version=dist_version,
            cuda=_str_or_none(values.get("cuda")),
            hip=_str_or_none(values.get("hip")),
        )
    return None


def _metadata_version(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        return None
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- CUDA toolchain -------------------------------------------------------------------------

_NVCC_RELEASE = re.compile(r"release (\d+)\.(\d+)")
_NVCC_TOP = re.compile(r"^#\$ TOP=(.+)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Toolkit:
    nvcc: Path
    version: str  # "13.0"
    root: Path  # the real toolkit root, even when nvcc on PATH is a wrapper script


def find_toolkit(environ: dict[str, str]) -> Toolkit | None:
    """The CUDA toolkit a build would use, found the way torch's cpp_extension finds it.

    CUDA_HOME (or CUDA_PATH) when set, and nothing else then; otherwise the nvcc on PATH, then
    /usr/local/cuda.
    """
    home = environ.get("CUDA_HOME") or environ.get("CUDA_PATH")
    if home:
        candidates = [Path(home) / "bin" / "nvcc"]
    else:
        on_path = shutil.which("nvcc", path=environ.get("PATH"))
        candidates = [Path(on_path)] if on_path else []
        candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for nvcc in candidates:
        if not nvcc.is_file():
            continue
        try:
            out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                                 timeout=60, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = _NVCC_RELEASE.search(out)
        if not m:
            continue
        root = Path(home) if home else _toolkit_root(nvcc)
        return Toolkit(nvcc=nvcc, version=f"{m.group(1)}.{m.group(2)}", root=root)
    return None


def _toolkit_root(nvcc: Path) -> Path:
    """Ask nvcc where its toolkit is: `nvcc -v --dryrun` prints `#$ TOP=...`.

    torch guesses the root as the parent of `which nvcc`, which is wrong when nvcc is a
    wrapper script outside the toolkit; nvcc itself knows better.
    """
    try:
        out = subprocess.run([str(nvcc), "-v", "--dryrun", "abistamp-probe.cu"],
                             capture_output=True, text=True, timeout=60, check=False)
        m = _NVCC_TOP.search(out.stdout + out.stderr)
        if m:
            return Path(os.path.normpath(m.group(1).strip()))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return nvcc.resolve().parent.parent


def toolkit_problems(root: Path) -> list[str]:
    """What a CUDA extension build needs from the toolkit root and does not find there."""
    missing = []
    include_dirs = [root / "include", root / "targets" / "x86_64-linux" / "include",
                    root / "targets" / "sbsa-linux" / "include"]
    if not any((d / "cuda_runtime.h").is_file() for d in include_dirs):
        missing.append("include/cuda_runtime.h")
    lib_dirs = [root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib"]
    if not any(next(d.glob("libcudart.so*"), None) for d in lib_dirs if d.is_dir()):
        missing.append("lib64/libcudart.so")
    return missing
