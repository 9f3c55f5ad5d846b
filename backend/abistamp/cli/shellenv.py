"""Shell variables that change a build but are not part of the variant's key.

The whole environment reaches each build (a CI job exports its build switches, as DeepSpeed's
and PyG's docs tell people to). The key that lets a later run skip a variant holds only the
variables known to change builds (`BUILD_ENV_PREFIXES`, `BUILD_ENV_NAMES` and `--env`): a
shell `FORCE_CUDA=1` changes what torch-scatter compiles, yet a run without it would skip the
variant as built. Such variables are found, without running anything, where the project's build
script reads them (`os.getenv("X")`, `os.environ["X"]`, `os.environ.get("X")` in setup.py and
the other Python files at the project's top), plus a short list of switches common in the
torch ecosystem; they are listed in the log and in the wheelhouse entry, and the docs tell
users to pass build switches with `--env`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

# Switches of widely used torch extensions (PyG's FORCE_CUDA, flash-attn's, NVCC_FLAGS) and the
# GPU visibility that setup.py files test with `torch.cuda.is_available()`.
KNOWN_SWITCHES = frozenset({
    "FORCE_CUDA", "FORCE_ONLY_CUDA", "FORCE_ONLY_CPU", "NVCC_FLAGS", "WITH_SYMBOLS",
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCM_PATH", "USE_ROCM", "CMAKE_ARGS",
    "FLASH_ATTENTION_FORCE_BUILD", "FLASH_ATTENTION_FORCE_CXX11_ABI",
    "FLASH_ATTENTION_SKIP_CUDA_BUILD", "FLASH_ATTN_CUDA_ARCHS", "NVCC_THREADS",
})
# Read by many build scripts without changing what they produce.
NOT_SWITCHES = frozenset({
    "PATH", "HOME", "USER", "PWD", "TMPDIR", "TEMP", "TMP", "LANG", "LC_ALL", "SHELL", "TERM",
    "MAX_JOBS", "VIRTUAL_ENV", "PYTHONPATH", "CI", "VERBOSE", "NINJA_STATUS",
})
_READ = re.compile(
    r"""(?:getenv|environ\.get|environ\.setdefault|environ\[|env\.get)\(?\s*(?:name\s*=\s*)?"""
    r"""['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


def read_by_build(project: Path) -> set[str]:
    """Names of environment variables the project's top-level build scripts read."""
    names: set[str] = set()
    for path in sorted(project.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        names.update(_READ.findall(text))
    return names


def unkeyed_environ(project: Path, environ: Mapping[str, str], keyed: Mapping[str, str]
                    ) -> dict[str, str]:
    """Variables set in `environ` that the build may read but the key does not hold."""
    names = (read_by_build(project) | KNOWN_SWITCHES) - NOT_SWITCHES
    return {k: environ[k] for k in sorted(names) if k in environ and k not in keyed}
