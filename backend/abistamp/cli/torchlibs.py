"""Which shared libraries a wheel's ELF files need (DT_NEEDED), and which of those are torch's.

A torch extension links torch's shared libraries (`libc10.so`, `libtorch*.so`, and for CUDA
builds `libcudart.so.13` and friends from the nvidia-* wheels); `abistamp repair` leaves those to
the installed torch. Each soname is looked up

1. in the torch environment's library folders (`torch/lib`, `torch.libs`, the `nvidia/*` wheels'
   `lib` folders): found there, it is torch's;
2. against a list of the names torch's libraries go by (`NAME_PATTERNS`), for a wheel built
   against a torch that is not at hand, or a library that the environment lacks.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import zipfile
from pathlib import Path
from typing import Any

from abistamp.core.errors import AbistampError

# What torch's own shared libraries are called, across CPU, CUDA (the nvidia-* wheels) and ROCm
# builds. Used only for sonames the torch environment does not resolve (or when there is none).
NAME_PATTERNS = (
    "libtorch.so*", "libtorch_*.so*", "libc10.so*", "libc10_*.so*", "libshm.so*",
    # torch's CPU and CUDA wheels ship their OpenMP runtime as torch/lib/libgomp.so.1; the
    # extension must share that one, not graft a second.
    "libcaffe2_*.so*", "libgomp-*.so*", "libgomp.so*",
    # CUDA runtime and libraries, as the nvidia-* wheels and torch's CUDA builds ship them.
    "libcudart.so*", "libcublas.so*", "libcublasLt.so*", "libcudnn*.so*", "libcufft.so*",
    "libcufftw.so*", "libcurand.so*", "libcusolver*.so*", "libcusparse*.so*", "libnccl.so*",
    "libnvrtc*.so*", "libnvToolsExt.so*", "libnvJitLink.so*", "libcupti.so*", "libcufile*.so*",
    "libnvshmem*.so*", "libnvperf*.so*", "libcuda.so*", "libnvidia-ml.so*",
    # ROCm builds.
    "libamdhip64.so*", "libhiprtc.so*", "libMIOpen.so*", "librocblas.so*", "libhipblas*.so*",
    "librccl.so*", "libroctx64.so*", "libhipfft.so*", "libhiprand.so*", "libhipsparse*.so*",
    "libhipsolver.so*", "libmagma.so*",
)

# Folders, relative to a site-packages folder, where torch and its CUDA wheels keep libraries.
LIBRARY_GLOBS = ("torch/lib", "torch.libs", "nvidia/*/lib", "nvidia/*/lib64", "nvidia/*/*/lib",
                 "nvidia/*/*/lib64")


@dataclasses.dataclass(frozen=True)
class TorchLibraries:
    """Where torch's libraries are, to tell them apart from the extension's own needs."""

    dirs: tuple[Path, ...]  # library folders of a torch environment; empty: by name only
    torch: str | None  # that environment's torch version
    origin: str  # for messages: `--python X`, or why names alone are used

    def owner(self, soname: str) -> str | None:
        """Why `soname` belongs to torch ("torch environment" or "name"), or None."""
        if any((d / soname).exists() for d in self.dirs):
            return "torch environment"
        if any(fnmatch.fnmatchcase(soname, p) for p in NAME_PATTERNS):
            return "name"
        return None


def torch_library_dirs(site_dirs: list[Path]) -> tuple[Path, ...]:
    found: list[Path] = []
    for site in site_dirs:
        for pattern in LIBRARY_GLOBS:
            found.extend(sorted(p for p in site.glob(pattern) if p.is_dir()))
    return tuple(found)


def torch_libraries(python: Path | None, record: dict[str, Any] | None,
                    explicit: bool) -> TorchLibraries:
    """The torch environment's libraries, when its torch is the one the wheel was built for.

    An environment named with `--python` (or the build environment) must have that torch; one
    found by default that does not is ignored, and names alone decide.
    """
    from .envs import site_dirs

    if python is None:
        return TorchLibraries((), None, "names only (no torch environment given)")
    sites = site_dirs(python)
    from abistamp.core.abi import read_installed

    installed = read_installed(sites)
    built_for = str(record["torch"]) if record and record.get("torch") else None
    where = f"`--python {python}`" if explicit else f"the environment of `{python}`"
    problem = None
    if installed is None:
        problem = f"{where} has no torch installed"
    elif built_for and _public(installed.torch_version) != _public(built_for):
        problem = (f"{where} has torch {installed.torch_version}, but the wheel was built for "
                   f"torch {built_for}")
    if problem:
        if explicit:
            raise AbistampError(problem, f"pass `--python` with an environment of torch "
                                f"{built_for or 'the wheel was built against'}, or leave it out "
                                "to tell torch's libraries by name")
        return TorchLibraries((), None, f"names only ({problem})")
    assert installed is not None
    return TorchLibraries(torch_library_dirs(sites), installed.torch_version, where)


def _public(version: str) -> str:
    from packaging.version import Version

    return Version(version).public


# --- reading the wheel's ELF files --------------------------------------------------------------


def needed_libraries(wheel: Path) -> dict[str, list[str]]:
    """DT_NEEDED of every ELF file in the wheel: {member: [soname, ...]}."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.file_size < 64:
                continue
            with zf.open(info) as f:
                if f.read(4) != b"\x7fELF":
                    continue
            try:
                elf = ELFFile(io.BytesIO(zf.read(info)))
                section = elf.get_section_by_name(".dynamic")
            except ELFError:
                continue
            if isinstance(section, DynamicSection):
                out[info.filename] = [str(t.needed)  # type: ignore[attr-defined]
                                      for t in section.iter_tags()
                                      if t.entry.d_tag == "DT_NEEDED"]
    return out
