"""CUDA builds on any builder: the arch list, torch's CUDA headers, and the toolkit.

Three things a CUDA build needs that a GPU-less builder does not give by itself:

- **The arch list.** With no GPU to ask and no `TORCH_CUDA_ARCH_LIST`, torch compiles for
  nothing useful and DeepSpeed falls back to archs CUDA 13 no longer has. The target torch
  knows the archs it was built for without a GPU (`torch._C._cuda_getArchFlags()`, what
  `torch.cuda.get_arch_list()` reads): that list, with PTX for the newest arch, is the default.
- **torch's CUDA headers.** torch's CUDA headers include cuSPARSE, cuBLAS and cuDNN headers,
  which a minimal toolkit lacks and torch's own CUDA wheels carry (`nvidia/cu13/include`;
  `nvidia/<lib>/include` for CUDA 12). Their folders go on `CPATH`, after the toolkit's.
- **The toolkit.** For CUDA 13 and later, NVIDIA ships the compiler as wheels: the
  `cuda-toolkit[nvcc,cccl]` metapackage pins nvcc, crt, nvvm, cccl and the runtime. abistamp
  uses them from the build environment (an isolated build asks for them through
  `get_requires_for_build_wheel`) or from a folder it keeps per CUDA version in the user's cache
  (`abistamp build` fills it). The backend itself never downloads anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .abi import read_installed
from .errors import AbistampError

if TYPE_CHECKING:
    from .abi import Toolkit, TorchABI
    from .settings import Settings

#: The extras of NVIDIA's `cuda-toolkit` metapackage a torch extension build needs.
TOOLKIT_EXTRAS = "nvcc,cccl"
#: The CUDA major version from which NVIDIA ships nvcc as a wheel.
FIRST_WHEEL_CUDA = 13
MARKER = "abistamp-toolkit.json"

CUDA12_ROUTES = (
    "NVIDIA ships no nvcc wheel for CUDA 12 (`nvidia-cuda-nvcc-cu12` holds only ptxas). Use a "
    "CUDA {cuda} toolkit another way: the system toolkit (NVIDIA's installer or your distribution's "
    "`cuda-toolkit-{dash}` package; set CUDA_HOME to it), conda's `cuda-nvcc={cuda}` with "
    "`cuda-cudart-dev` and `cuda-cccl` (conda-forge or the nvidia channel), or NVIDIA's "
    "`nvidia/cuda:{cuda}.*-devel` container images; then set `cuda-toolkit = \"system\"`"
)


def toolkit_requirement(cuda: str) -> str:
    """`cuda-toolkit[nvcc,cccl]==13.0.*`: the toolkit of a torch built with CUDA `cuda`."""
    return f"cuda-toolkit[{TOOLKIT_EXTRAS}]=={cuda}.*"


def requirement_cuda(text: str) -> str | None:
    """The CUDA version of a toolkit_requirement() (`13.0`), or None for anything else."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    specs = list(req.specifier)
    if canonicalize_name(req.name) != "cuda-toolkit" or len(specs) != 1:
        return None
    m = re.fullmatch(r"(\d+\.\d+)\.\*", specs[0].version)
    return m.group(1) if m and specs[0].operator == "==" else None


# --- the arch list ---------------------------------------------------------------------------

_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")
#: Architecture names torch's TORCH_CUDA_ARCH_LIST accepts besides numbers.
NAMED_ARCHS = ("Kepler", "Maxwell", "Pascal", "Volta", "Turing", "Ampere", "Ada", "Hopper",
               "Blackwell")
ARCH_KEYWORDS = ("torch", "native")


def split_archs(text: str) -> list[str]:
    """TORCH_CUDA_ARCH_LIST's syntax: entries separated by `;`, `,` or spaces."""
    return [a for a in re.split(r"[;,\s]+", text.strip()) if a]


def parse_archs_setting(raw: Any, where: str) -> str:
    """`cuda-archs`: `torch`, `native`, or a list of archs (TOML list, or `8.0;9.0+PTX`)."""
    if isinstance(raw, str) and raw.strip() in ARCH_KEYWORDS:
        return raw.strip()
    if isinstance(raw, str):
        items = split_archs(raw)
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        items = [v.strip() for v in raw]
    else:
        hint = " (quote numbers: a TOML 9.0 is a float)" if isinstance(raw, (list, float)) else ""
        raise AbistampError(f"{where} must be `torch`, `native` or a list of CUDA archs, found "
                            f"{raw!r}", f'write it as ["8.0", "9.0+PTX"]{hint}')
    if not items:
        raise AbistampError(f"{where} is empty",
                            'name archs such as ["8.0", "9.0+PTX"], or use "torch"')
    for item in items:
        if not (_ARCH.fullmatch(item) or item.removesuffix("+PTX") in NAMED_ARCHS):
            raise AbistampError(
                f"{where} has `{item}`, which is not a CUDA arch",
                'write archs as compute capabilities such as "8.0", "9.0a" or "12.0+PTX" '
                "(or torch's names: " + ", ".join(NAMED_ARCHS) + ")")
    return ";".join(items)


@dataclasses.dataclass(frozen=True)
class Archs:
    value: str  # as TORCH_CUDA_ARCH_LIST takes it: "7.5;8.0;12.0+PTX"
    source: str  # "TORCH_CUDA_ARCH_LIST", "cuda-archs", "torch" or "native"

    @property
    def items(self) -> list[str]:
        return split_archs(self.value)


def torch_archs(arch_flags: list[str]) -> str:
    """torch's `sm_75 sm_80 ... compute_120` as TORCH_CUDA_ARCH_LIST, PTX for the newest."""
    archs: dict[tuple[int, int, str], bool] = {}
    for flag in arch_flags:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", flag)
        if not m:
            continue
        key = (int(m.group(2)), int(m.group(3)), m.group(4))
        archs[key] = archs.get(key, False) or m.group(1) == "compute"
    if not archs:
        return ""
    newest = max(archs)
    archs[newest] = True
    return ";".join(f"{a}.{b}{s}" + ("+PTX" if ptx else "")
                    for (a, b, s), ptx in sorted(archs.items()))


def choose_archs(settings: Settings, environ: Mapping[str, str]) -> Archs | None:
    """The arch list of this build and where it came from; imports torch when it must."""
    user = (environ.get("TORCH_CUDA_ARCH_LIST") or "").strip()
    if user:
        return Archs(";".join(split_archs(user)), "TORCH_CUDA_ARCH_LIST")
    setting = settings.cuda_archs
    if setting not in ARCH_KEYWORDS:
        return Archs(setting, "cuda-archs")
    import torch

    if setting == "native":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise AbistampError(
                f"{settings.origin('cuda_archs')} is `native`, but no GPU is visible to torch "
                "here", 'use `cuda-archs = "torch"` (the archs torch itself was built for) or '
                "list the archs")
        caps = {torch.cuda.get_device_capability(i) for i in range(count)}
        return Archs(torch_archs([f"sm_{a}{b}" for a, b in caps]), "native")
    flags = torch.cuda.get_arch_list()
    if not flags and hasattr(torch._C, "_cuda_getArchFlags"):
        # Older torch answers [] when no GPU is visible; the list itself needs none.
        flags = (torch._C._cuda_getArchFlags() or "").split()
    value = torch_archs(flags)
    return Archs(value, "torch") if value else None


def nvcc_archs(nvcc: Path) -> set[str] | None:
    """The virtual archs this nvcc compiles for (`compute_75`, ...); None when it won't say."""
    try:
        out = subprocess.run([str(nvcc), "--list-gpu-arch"], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = set(re.findall(r"compute_\d+[a-z]?", out.stdout))
    return found if out.returncode == 0 and found else None


def unsupported_archs(archs: Archs, supported: set[str]) -> list[str]:
    """The entries of archs that none of nvcc's virtual archs covers (named archs pass)."""
    bad = []
    for item in archs.items:
        m = _ARCH.fullmatch(item)
        if m and f"compute_{m.group(1)}{m.group(2)}" not in supported:
            bad.append(item)
    return bad


def _capability(virtual_arch: str) -> tuple[int, int]:
    """`compute_120` -> (12, 0)."""
    digits = re.sub(r"\D", "", virtual_arch)
    return int(digits[:-1]), int(digits[-1])


def check_archs(archs: Archs | None, toolkit: Toolkit, settings: Settings) -> None:
    if archs is None:
        return
    supported = nvcc_archs(toolkit.nvcc)
    if supported is None:
        return
    bad = unsupported_archs(archs, supported)
    if not bad:
        return
    where = {"TORCH_CUDA_ARCH_LIST": "the environment variable `TORCH_CUDA_ARCH_LIST`",
             "cuda-archs": settings.origin("cuda_archs"),
             "torch": "the target torch's own arch list",
             "native": "the visible GPUs"}[archs.source]
    ordered = sorted(_capability(a) for a in supported)
    raise AbistampError(
        f"{where} asks for CUDA arch{'s' if len(bad) > 1 else ''} "
        f"{', '.join(f'`{b}`' for b in bad)} (of `{archs.value}`), which nvcc "
        f"{toolkit.full_version or toolkit.version} at `{toolkit.nvcc}` cannot compile: it "
        f"supports {', '.join(f'{a}.{b}' for a, b in ordered)}",
        "drop those archs from the list, or use a toolkit that still has them (CUDA 13 dropped "
        "Maxwell, Pascal and Volta: 5.x, 6.x, 7.0, 7.2)")


# --- torch's CUDA headers --------------------------------------------------------------------


def torch_cuda_headers(torch_dir: Path, cuda: str) -> list[Path]:
    """The include folders of torch's own CUDA wheels: `nvidia/cu13/include` first (the CUDA 13
    layout), then every `nvidia/<lib>/include` (the CUDA 12 layout, and cuDNN, NCCL...)."""
    nvidia = torch_dir.parent / "nvidia"
    if not nvidia.is_dir():
        return []
    first = nvidia / f"cu{cuda.split('.')[0]}" / "include"
    found = [first] if first.is_dir() else []
    found += [d for d in sorted(nvidia.glob("*/include")) if d.is_dir() and d != first]
    return found


# --- the toolkit -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToolkitChoice:
    toolkit: Toolkit | None
    source: str | None  # "system", "build-environment", "abistamp-cache"; None: none found
    requirement: str | None = None  # the wheels' requirement, when they are the source
    library_dir: Path | None = None  # a folder to add to LIBRARY_PATH (unversioned libcudart)

    def record(self) -> dict[str, Any] | None:
        if self.toolkit is None:
            return None
        return {"source": self.source, "version": self.toolkit.full_version
                or self.toolkit.version, "requirement": self.requirement}


def cache_root(environ: Mapping[str, str]) -> Path:
    """abistamp's folder in the user's cache (XDG_CACHE_HOME, else ~/.cache)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "abistamp"


def kept_folder(cuda: str, environ: Mapping[str, str]) -> Path:
    """The toolkit folder abistamp keeps for one CUDA version: `--target` of the wheels."""
    return cache_root(environ) / "cuda-toolkit" / cuda


def wheels_root(site: Path, cuda: str) -> Path:
    return site / "nvidia" / f"cu{cuda.split('.')[0]}"


def wants_wheels(settings: Settings, abi: TorchABI, environ: Mapping[str, str]) -> bool:
    """Whether this build takes its toolkit from NVIDIA's wheels (decides `auto`)."""
    mode = settings.cuda_toolkit
    if mode == "system" or not abi.cuda or abi.hip:
        return False
    major = int(abi.cuda.split(".")[0])
    if major < FIRST_WHEEL_CUDA:
        if mode == "wheels":
            raise AbistampError(
                f"{settings.origin('cuda_toolkit')} is `wheels`, but torch {abi.torch_version} "
                f"is built with CUDA {abi.cuda}",
                CUDA12_ROUTES.format(cuda=abi.cuda, dash=abi.cuda.replace(".", "-")))
        return False
    if mode == "wheels":
        return True
    if environ.get("CUDA_HOME") or environ.get("CUDA_PATH"):
        return False  # the user chose a toolkit; `auto` does not overrule that
    from .abi import find_toolkit

    system = find_toolkit(dict(environ))
    return system is None or system.version != abi.cuda


def site_dirs() -> list[Path]:
    """The folders of sys.path that packages install into (site-packages, a --target)."""
    return [Path(p) for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]


def wheels_toolkit(abi: TorchABI, environ: Mapping[str, str]) -> ToolkitChoice | None:
    """NVIDIA's toolkit wheels at torch's CUDA version: in the build environment, else in the
    folder abistamp keeps. None when neither has them."""
    assert abi.cuda
    from .abi import find_toolkit

    candidates = [(wheels_root(site, abi.cuda), "build-environment") for site in site_dirs()]
    kept = kept_folder(abi.cuda, environ)
    if (kept / MARKER).is_file():
        candidates.append((wheels_root(kept, abi.cuda), "abistamp-cache"))
    for root, source in candidates:
        if not (root / "bin" / "nvcc").is_file():
            continue
        toolkit = find_toolkit({"CUDA_HOME": str(root)})
        if toolkit is None or toolkit.version != abi.cuda:
            continue
        library_dir = None
        if source == "build-environment" and not _has_unversioned_cudart(root):
            library_dir = _cudart_link_folder(root, environ)
        return ToolkitChoice(toolkit, source, toolkit_requirement(abi.cuda), library_dir)
    return None


def missing_toolkit_error(settings: Settings, abi: TorchABI, environ: Mapping[str, str]
                          ) -> AbistampError:
    assert abi.cuda
    req = toolkit_requirement(abi.cuda)
    why = (f"{settings.origin('cuda_toolkit')} is `wheels`" if settings.cuda_toolkit == "wheels"
           else f"no nvcc for CUDA {abi.cuda} was found on this machine (`cuda-toolkit = auto`)")
    return AbistampError(
        f"{why}, and NVIDIA's toolkit wheels `{req}` are neither in the build environment "
        f"`{sys.prefix}` nor in `{kept_folder(abi.cuda, environ)}`",
        f"build with build isolation (the backend then asks for `{req}`), or through "
        f"`abistamp build`, which keeps one toolkit per CUDA version in "
        f"`{kept_folder(abi.cuda, environ).parent}`; or install `{req}` into the build "
        "environment yourself")


def _has_unversioned_cudart(root: Path) -> bool:
    return any((root / d / "libcudart.so").exists() for d in ("lib64", "lib"))


def _cudart_link_folder(root: Path, environ: Mapping[str, str]) -> Path | None:
    """torch links with `-lcudart`, which needs an unversioned libcudart.so that the wheels lack.
    A toolkit in someone's environment is not ours to change: the link goes into our cache."""
    target = next(iter(sorted((root / "lib").glob("libcudart.so.*"))), None)
    if target is None:
        return None
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    folder = cache_root(environ) / "cuda-toolkit" / "links" / digest
    _link(folder / "libcudart.so", target)
    return folder


def _link(link: Path, target: Path) -> None:
    """A symlink made whole or not at all (a concurrent build may make the same one)."""
    from .atomic import owner

    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.parent / f".{link.name}.{owner()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def finish_toolkit(target: Path, cuda: str) -> None:
    """Make a `--target` install of the wheels a toolkit root torch can link with: `lib64`
    holding links to `lib/*` and the unversioned `libcudart.so`; then the marker."""
    root = wheels_root(target, cuda)
    nvcc = root / "bin" / "nvcc"
    if not nvcc.is_file():
        raise AbistampError(f"the toolkit wheels installed into `{target}` have no `{nvcc.name}` "
                            f"at `{nvcc}`", f"check that `{toolkit_requirement(cuda)}` exists "
                            "on the index in use")
    lib64 = root / "lib64"
    lib64.mkdir(exist_ok=True)
    for lib in sorted((root / "lib").iterdir()):
        if not (lib64 / lib.name).exists():
            (lib64 / lib.name).symlink_to(Path("..") / "lib" / lib.name)
    cudart = sorted(root.glob("lib/libcudart.so.*"))
    if cudart and not (lib64 / "libcudart.so").exists():
        (lib64 / "libcudart.so").symlink_to(cudart[0].name)
    versions = dict(p.name.removesuffix(".dist-info").split("-", 1)
                    for p in target.glob("*.dist-info"))
    (target / MARKER).write_text(json.dumps({"requirement": toolkit_requirement(cuda),
                                             "installed": versions}, indent=1, sort_keys=True))


def fill_kept(cuda: str, environ: Mapping[str, str], install: Callable[[Path, str], None],
              on_install: Callable[[Path], None] = lambda folder: None) -> Path:
    """Make the kept toolkit folder for `cuda`, once: `install(folder, requirement)` fills a
    private folder (`--target`), which is then finished and renamed into place, all under a
    lock, so two builds wanting it install it once and nobody sees half of it."""
    from .atomic import file_lock, owner

    folder = kept_folder(cuda, environ)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{cuda}.lock"):
        if (folder / MARKER).is_file():
            return folder
        on_install(folder)
        tmp = folder.parent / f".{cuda}.{owner()}.part"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            install(tmp, toolkit_requirement(cuda))
            finish_toolkit(tmp, cuda)
            shutil.rmtree(folder, ignore_errors=True)  # a folder of an older layout
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def toolkit_request(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """For get_requires_for_build_wheel: the toolkit requirement, when this build takes the
    wheels and has none. torch is read from its files, not imported."""
    abi = read_installed(site_dirs()) or _abi_of_requirement(settings.torch)
    if abi is None or not wants_wheels(settings, abi, environ):
        return None
    if wheels_toolkit(abi, environ) is not None:
        return None
    assert abi.cuda
    return toolkit_requirement(abi.cuda)


def _abi_of_requirement(text: str) -> TorchABI | None:
    """Before torch is installed (an isolated build that asks for it through the `torch`
    setting), its CUDA version is known only from a local label: `torch==2.14.1+cu130`."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    from .abi import TorchABI

    try:
        specs = list(Requirement(text).specifier) if text else []
        version = Version(specs[0].version) if len(specs) == 1 else None
    except (InvalidRequirement, InvalidVersion):
        return None
    m = re.fullmatch(r"cu(\d+)(\d)", version.local or "") if version else None
    if version is None or m is None:
        return None
    return TorchABI(str(version), cuda=f"{int(m.group(1))}.{m.group(2)}")


# --- everything together ---------------------------------------------------------------------


@dataclasses.dataclass
class CudaSetup:
    toolkit: ToolkitChoice
    archs: Archs | None
    headers: list[Path]
    site: Path
    environ: dict[str, str]  # what to set for the build

    def record(self) -> dict[str, Any]:
        return {
            "cuda_arch_source": self.archs.source if self.archs else None,
            "cuda_toolkit": self.toolkit.record(),
            "cuda_headers": [h.relative_to(self.site).as_posix() for h in self.headers],
        }


def setup(settings: Settings, abi: TorchABI, environ: Mapping[str, str]) -> CudaSetup:
    """Decide the toolkit, the arch list and the header folders of a CUDA torch's build, and
    the environment variables that carry them. Runs in the build's own interpreter."""
    import torch

    from .abi import find_toolkit

    assert abi.cuda and not abi.hip
    changes: dict[str, str] = {}
    if wants_wheels(settings, abi, environ):
        choice = wheels_toolkit(abi, environ)
        if choice is None:
            if settings.cuda_toolkit == "wheels":
                raise missing_toolkit_error(settings, abi, environ)
            # `auto` with nothing at hand: whatever the machine has; the pre-compile check
            # explains what is missing if CUDA code is compiled at all.
            system = find_toolkit(dict(environ))
            choice = ToolkitChoice(system, "system" if system else None)
        else:
            assert choice.toolkit is not None
            root = str(choice.toolkit.root)
            if environ.get("CUDA_HOME", root) != root or environ.get("CUDA_PATH"):
                from .errors import log

                log(f"CUDA_HOME/CUDA_PATH of the environment ignored: `cuda-toolkit` takes the "
                    f"toolkit from NVIDIA's wheels at `{root}`")
            changes["CUDA_HOME"] = root
            changes["PATH"] = f"{choice.toolkit.root / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
            if choice.library_dir:
                libs = environ.get("LIBRARY_PATH")
                changes["LIBRARY_PATH"] = os.pathsep.join(
                    [str(choice.library_dir)] + ([libs] if libs else []))
    else:
        system = find_toolkit(dict(environ))
        choice = ToolkitChoice(system, "system" if system else None)
        if system and not environ.get("CUDA_HOME") and not environ.get("CUDA_PATH"):
            # torch guesses CUDA_HOME from `which nvcc`, wrong when nvcc is a wrapper.
            changes["CUDA_HOME"] = str(system.root)
    archs = choose_archs(settings, environ)
    if archs and archs.source != "TORCH_CUDA_ARCH_LIST":
        changes["TORCH_CUDA_ARCH_LIST"] = archs.value
    torch_dir = Path(torch.__file__).parent
    headers = torch_cuda_headers(torch_dir, abi.cuda)
    if headers:
        old = [p for p in environ.get("CPATH", "").split(os.pathsep) if p]
        changes["CPATH"] = os.pathsep.join(old + [str(h) for h in headers if str(h) not in old])
    return CudaSetup(choice, archs, headers, torch_dir.parent, changes)
