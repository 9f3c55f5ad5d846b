"""What the backend decides about a wheel's version and requirements: whether a torch pin may
be added to its metadata (PEP 621, 643), whether its version gets the local label, and the
stamp made from those decisions and the build's facts (docs/stamping.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .abi import TorchABI
from .errors import log
from .facts import BuildFacts
from .labels import torch_pin
from .profiles import Profile
from .record import Stamp
from .settings import Settings
from .stamp import WheelInfo, label_for, make_stamp, metadata_fields


def pin(settings: Settings, project: Path, pyproject: Mapping[str, Any], abi: TorchABI
        ) -> str | None:
    """The torch requirement to add to the wheel's metadata, if any and if allowed;
    `pyproject` is the project's pyproject.toml, parsed ({} without one)."""
    req = torch_pin(abi, settings.pin)
    if req is None:
        return None
    allowed, reason = pin_allowed(project, pyproject)
    if not allowed:
        log(f"no torch pin added: {reason}. To pin it, add \"{req}\" to "
            "`[project] dependencies` yourself")
        return None
    return str(req)


def pin_allowed(project: Path, pyproject: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the metadata standards let a backend add Requires-Dist here (PEP 621, 643):
    the sdist's PKG-INFO says, else `pyproject`, the project's pyproject.toml parsed."""
    pkg_info = project / "PKG-INFO"
    if pkg_info.is_file():
        data = pkg_info.read_bytes()
        mv = first_field(data, "Metadata-Version") or "1.0"
        dynamic = {v.lower() for v in metadata_fields(data, "Dynamic")}
        if tuple(int(x) for x in mv.split(".")[:2]) < (2, 2) or "requires-dist" in dynamic:
            return True, "PKG-INFO leaves Requires-Dist dynamic"
        return False, "the sdist's PKG-INFO states Requires-Dist as static (PEP 643)"
    table = pyproject.get("project")
    if table is None:
        return True, "no [project] table: metadata comes from setup.py"
    if "dependencies" in table.get("dynamic", []):
        return True, "`dependencies` is dynamic"
    return False, "`[project] dependencies` in pyproject.toml is static (PEP 621)"


def local_version_reason(settings: Settings, project: Path, pyproject: Mapping[str, Any],
                         editable: bool, metadata_directory: str | None) -> tuple[bool, str]:
    """Whether the wheel's version gets the ABI label as its local version, and why;
    `pyproject` is the project's pyproject.toml, parsed ({} without one)."""
    mode = settings.local_version
    if mode == "always" and metadata_directory is not None:
        return True, ("`local-version` is `always` (prepare_metadata_for_build_* put the "
                      "label into the metadata the frontend holds)")
    if mode != "auto":
        return mode == "always", f"`local-version` is `{mode}`"
    if metadata_directory is not None:
        return False, "the frontend already has the metadata (prepare_metadata_for_build_*)"
    if editable:
        return False, "editable builds keep the version of the source"
    if (project / "PKG-INFO").is_file():
        return False, "building from an sdist, whose PKG-INFO states the version"
    table = pyproject.get("project")
    if table is not None and "version" not in table.get("dynamic", []):
        return False, "`[project] version` is static, and uv reads it without asking"
    return True, "a wheel built straight from a source tree with a dynamic version"


def wheel_stamp(settings: Settings, project: Path, pyproject: Mapping[str, Any],
                profile: Profile | None, abi: TorchABI, built: WheelInfo, facts: BuildFacts,
                *, editable: bool, metadata_directory: str | None) -> Stamp:
    """The stamp for a built wheel: label, local version, pin, and the build's facts;
    `pyproject` is the project's pyproject.toml, parsed ({} without one), and `built` what
    read_wheel read of the wheel, with the members the profile reads."""
    apply, reason = local_version_reason(settings, project, pyproject, editable,
                                         metadata_directory)
    log(f"torch {abi.torch_version} ({abi.accelerator}), label "
        f"`{label_for(settings, abi)}`; local version label "
        f"{'added' if apply else 'not added'}: {reason}")
    build_facts: dict[str, Any] = {
        "ninja": facts.ninja,
        "compiler_cache": bool(facts.compiler_cache),
        "compiled_cuda": facts.compiled_cuda,
        "editable": editable,
    }
    if facts.cuda is not None:
        build_facts.update(facts.cuda.record())
    if profile:
        build_facts["profile"] = profile.verify(built, abi, facts)
    return make_stamp(settings, abi, built, apply_label=apply, reason=reason,
                      pin=pin(settings, project, pyproject, abi), build_facts=build_facts)


def first_field(data: bytes, name: str) -> str | None:
    """The first value of a METADATA or PKG-INFO header field, or None."""
    values = metadata_fields(data, name)
    return values[0] if values else None
