"""The host CPU, for code compiled for it: the x86 instruction sets that matter for
`-march=native`, the portable alternative (x86-64-v3), what a build on this machine assumes,
and whether this machine has what a build assumed.

Any profile whose project compiles CPU code for the builder records such an object under its
`cpu` key (docs/abi-record.md); `abistamp check` compares it with the running CPU.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

# x86 instruction-set extensions that matter for code compiled with -march=native.
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl",
             "avx512dq", "avx512cd", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
             "amx_tile")

# x86-64-v3: AVX2, FMA, BMI2, F16C; every x86-64 server CPU since about 2015.
PORTABLE: dict[str, Any] = {
    "machine": "x86_64",
    "march": "x86-64-v3",
    "simd": "AVX256",
    "flags": ["avx", "avx2", "bmi2", "f16c", "fma", "sse4_2"],
}


def host_cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_requirements() -> dict[str, Any]:
    """What code compiled with -march=native on this builder assumes of the CPU."""
    flags = host_cpu_flags()
    return {
        "machine": platform.machine(),
        "march": "native",
        "simd": "AVX512" if "avx512f" in flags else "AVX256" if "avx2" in flags else "SCALAR",
        "flags": sorted(f for f in X86_FLAGS if f in flags),
    }


def cpu_problems(cpu: Any, host_flags: set[str]) -> list[str]:
    """The instruction sets a build's CPU code assumes, against this machine's."""
    if not isinstance(cpu, dict):
        return []
    problems = []
    machine = cpu.get("machine")
    if machine and machine != platform.machine():
        problems.append(f"CPU code built for {machine}, this machine is {platform.machine()}")
    flags = cpu.get("flags") or []
    if host_flags and flags:
        missing = sorted(set(flags) - host_flags)
        if missing:
            problems.append(f"CPU code assumes {', '.join(missing)}, which this CPU lacks "
                            f"(built with -march={cpu.get('march')})")
    return problems
