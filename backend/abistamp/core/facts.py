"""What a build learns as it runs: one typed object instead of a shared dict.

Written by `buildenv.build_environment()` (ninja, the compiler cache, the toolkit, the variables
abistamp set, the ABI once nvcc is known), by the pre-compile check (whether CUDA sources were
compiled) and by a profile's `prepare()` (the CPU its code is compiled for); read by
`decisions.wheel_stamp()` for the ABI record and by a profile's `environ()` and `verify()`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .abi import Toolkit, TorchABI
    from .cuda import CudaSetup


@dataclasses.dataclass
class BuildFacts:
    abi: TorchABI  # the ABI the build compiles against (nvcc filled in once found)
    toolkit: Toolkit | None = None  # the CUDA toolkit found, for a CUDA torch
    ninja: bool | None = None  # whether ninja is used; None when left to the project
    compiler_cache: str | None = None  # CCACHE_DIR when compiling through ccache
    compiled_cuda: bool = False  # whether any extension had CUDA sources
    environ: dict[str, str] = dataclasses.field(default_factory=dict)  # what abistamp set
    cpu: dict[str, Any] | None = None  # a profile's CPU target, when it chose one (core/cpu.py)
    cuda: CudaSetup | None = None  # a CUDA torch's toolkit, archs and headers (core/cuda.py)
