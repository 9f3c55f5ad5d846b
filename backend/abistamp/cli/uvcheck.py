"""`abistamp uv-config --check`: find dependencies uv would build once and reuse for any torch.

uv caches a source build by the source, its config settings and its extra build dependencies,
never by the torch that happened to be in the build environment. A dependency that compiles
against torch at build time is therefore safe only when something puts the torch into that
key or avoids the build:

- `[tool.uv.extra-build-dependencies] NAME = [{ requirement = "torch", match-runtime = true }]`;
- `[tool.uv.sources] NAME` pointing at an index (prebuilt wheels, such as a per-ABI wheelhouse);
- `[tool.uv] no-build-package` (or `no-build = true`): only wheels may be installed;
- `[tool.uv.config-settings-package] NAME`: a key per value, but one value for every extra.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from abistamp.core.errors import AbistampError
from abistamp.core.settings import read_pyproject

#: Projects known to compile against torch when built from source.
KNOWN = frozenset(canonicalize_name(n) for n in (
    "deepspeed", "torch-scatter", "torch-sparse", "torch-cluster", "torch-spline-conv",
    "pyg-lib", "flash-attn", "apex", "mmcv", "detectron2", "pytorch3d", "causal-conv1d",
    "mamba-ssm", "torchsort", "fused-dense-lib", "xformers", "natten", "bitsandbytes",
    "torch-harmonics", "grouped-gemm", "transformer-engine",
))
_IMPORTS_TORCH = re.compile(r"^\s*(?:import torch|from torch[\s.])", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Finding:
    package: str
    why: str  # why it builds against torch
    fix: str


def check_project(pyproject: Path) -> tuple[list[Finding], list[str]]:
    """Findings (unsafe dependencies) and notes (safe ones, with the reason)."""
    if not pyproject.is_file():
        raise AbistampError(f"`{pyproject}` does not exist",
                            "give the pyproject.toml of a uv project")
    data = read_pyproject(pyproject)
    uv = data.get("tool", {}).get("uv", {})
    sources: dict[str, Any] = {canonicalize_name(k): v for k, v in uv.get("sources", {}).items()}
    extra_build: dict[str, Any] = {canonicalize_name(k): v
                                   for k, v in uv.get("extra-build-dependencies", {}).items()}
    config_pkg: set[str] = {canonicalize_name(k) for k in uv.get("config-settings-package", {})}
    no_build = uv.get("no-build") is True
    no_build_pkg: set[str] = {canonicalize_name(n) for n in uv.get("no-build-package", [])}

    findings: list[Finding] = []
    notes: list[str] = []
    for name in sorted(dependency_names(data)):
        why = builds_against_torch(name, sources.get(name), pyproject.parent)
        if why is None:
            continue
        if _match_runtime(extra_build.get(name)):
            notes.append(f"{name}: ok, extra-build-dependencies has torch with match-runtime")
        elif _from_index(sources.get(name)):
            notes.append(f"{name}: ok, installed from an index (prebuilt wheels)")
        elif no_build or name in no_build_pkg:
            notes.append(f"{name}: ok, no-build: only wheels are installed")
        elif name in config_pkg:
            notes.append(f"{name}: ok for one torch: config-settings-package separates builds, "
                         "but cannot differ between extras")
        else:
            findings.append(Finding(name, why, (
                f'add to pyproject.toml: [tool.uv.extra-build-dependencies] {name} = '
                '[{ requirement = "torch", match-runtime = true }]  (or route it to a per-ABI '
                "wheelhouse: abistamp uv-config)")))
    return findings, notes


def dependency_names(data: dict[str, Any]) -> set[str]:
    project = data.get("project", {})
    texts: list[str] = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        texts += group
    for group in data.get("dependency-groups", {}).values():
        texts += [t for t in group if isinstance(t, str)]
    texts += data.get("tool", {}).get("uv", {}).get("dev-dependencies", [])
    names: set[str] = set()
    for text in texts:
        try:
            names.add(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            continue
    return names


def builds_against_torch(name: str, source: Any, root: Path) -> str | None:
    if name in KNOWN:
        return "compiles against torch when built from source"
    for entry in source if isinstance(source, list) else [source]:
        if isinstance(entry, dict) and "path" in entry:
            tree = (root / entry["path"]).resolve()
            setup = tree / "setup.py"
            if setup.is_file() and _IMPORTS_TORCH.search(setup.read_text(errors="replace")):
                return f"its setup.py ({setup}) imports torch at build time"
    return None


def _match_runtime(entries: Any) -> bool:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("match-runtime") is True:
            try:
                if canonicalize_name(Requirement(entry.get("requirement", "")).name) == "torch":
                    return True
            except InvalidRequirement:
                continue
    return False


def _from_index(source: Any) -> bool:
    entries = source if isinstance(source, list) else [source]
    return bool(entries) and all(isinstance(e, dict) and "index" in e for e in entries)
