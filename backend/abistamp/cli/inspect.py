"""`abistamp inspect`: what a wheel says about the torch it was built for (its abistamp record,
build tag, tags and torch pins), for people or as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from abistamp.core.profiles import all_profiles, by_name, wheel_files

from .common import EXIT_OK


def describe_wheel(path: Path) -> dict[str, Any]:
    from abistamp.core.stamp import metadata_fields, read_wheel

    info = read_wheel(path, wheel_files(all_profiles()))
    requires = metadata_fields(info.metadata, "Requires-Dist")
    torch_requires = [r for r in requires if _names_torch(r)]
    data: dict[str, Any] = {
        "wheel": path.name, "path": str(path), "name": info.name, "version": info.version,
        "build_tag": info.build_tag, "tags": info.tags, "torch_requires": torch_requires,
        "record": info.abi_record,
    }
    if not info.abi_record or not info.abi_record.get("profile"):
        for profile in all_profiles():
            own = profile.own_record(info)
            if own is not None:
                data[profile.name] = own
    return data


def _names_torch(text: str) -> bool:
    try:
        return canonicalize_name(Requirement(text).name) == "torch"
    except InvalidRequirement:
        return False


def render_wheel(d: dict[str, Any]) -> str:
    r = d["record"]
    lines = [d["wheel"]]

    def row(key: str, value: Any) -> None:
        lines.append(f"  {key:<14}{value}")

    row("version", d["version"])
    row("build tag", d["build_tag"] or "-")
    row("tags", d["tags"])
    row("torch pins", ", ".join(d["torch_requires"]) or "none")
    if not r:
        row("abistamp", "no record: this wheel is not stamped")
    else:
        cxx = {True: "yes", False: "no", None: "unknown"}[r.get("cxx11abi")]
        row("torch", f"{r.get('torch')} ({r.get('accelerator')}; C++11 ABI {cxx})")
        if r.get("cuda") or r.get("hip"):
            row("cuda/hip", f"cuda {r.get('cuda') or '-'}, hip {r.get('hip') or '-'}, "
                f"nvcc {r.get('nvcc') or '-'}, archs {r.get('cuda_arch_list') or 'default'}, "
                f"compiled CUDA: {r.get('compiled_cuda')}")
        lv = r.get("local_version") or {}
        row("label", f"{r.get('label')} (local version "
            f"{'added' if lv.get('applied') else 'not added'}: {lv.get('reason', '-')})")
        row("version from", r.get("original_version"))
        row("pin", r.get("pin") or "none")
        extras = []
        if r.get("editable"):
            extras.append("editable")
        if r.get("stamped_after_build"):
            extras.append("stamped after the build")
        if (r.get("cuda") or r.get("hip")) and r.get("compiled_cuda") is False:
            # PyG's setup.py files compile CUDA only with a GPU visible or FORCE_CUDA=1.
            extras.append("CPU-only: torch is a CUDA build but no CUDA sources were compiled "
                          "(on a GPU-less builder, projects like torch-scatter need "
                          "FORCE_CUDA=1)")
        if extras:
            row("notes", ", ".join(extras))
        profile = r.get("profile")
        if profile:
            known = by_name(profile.get("name"))
            row("profile", f"{profile.get('name')}: " + (
                known.describe(profile, own=False) if known else
                "recorded " + ", ".join(sorted(profile))))
            cpu = profile.get("cpu")
            if cpu:
                row("cpu", f"{cpu.get('machine')} -march={cpu.get('march')} "
                    f"({' '.join(cpu.get('flags') or [])})")
        rep = r.get("repair")
        if rep:
            row("repaired", f"{rep.get('policy')} by {rep.get('tool')}; left to torch: "
                f"{', '.join(rep.get('left_to_torch') or []) or 'none'}; grafted: "
                f"{', '.join(rep.get('grafted') or []) or 'none'}")
        row("stamped by", f"abistamp {r.get('abistamp')} (record schema {r.get('schema')})")
    for p in all_profiles():
        if d.get(p.name):
            row(p.name, p.describe(d[p.name], own=True))
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = "Show the ABI record, stamps and torch pins of wheels."
EPILOG = "example:\n  abistamp inspect --json wheelhouse/*/*.whl\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", metavar="WHEEL")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    described = [describe_wheel(Path(w)) for w in args.wheels]
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
    else:
        print("\n\n".join(render_wheel(d) for d in described))
    return EXIT_OK
