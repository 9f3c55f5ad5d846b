"""`abistamp inspect`: what a wheel says about the torch it was built for (its abistamp record,
build tag, tags and torch pins), for people or as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import EXIT_OK


def describe_wheel(path: Path) -> dict[str, Any]:
    from abistamp.core.stamp import metadata_fields, read_wheel

    info = read_wheel(path)
    requires = metadata_fields(info.metadata, "Requires-Dist")
    torch_requires = [r for r in requires if r.split(";")[0].strip().lower().startswith("torch")
                      and r[5:6] in ("", " ", "=", "<", ">", "!", "~", "[", "(", ";")]
    data: dict[str, Any] = {
        "wheel": path.name, "path": str(path), "name": info.name, "version": info.version,
        "build_tag": info.build_tag, "tags": info.tags, "torch_requires": torch_requires,
        "record": info.abi_record,
    }
    if not info.abi_record or not info.abi_record.get("profile"):
        import zipfile

        from abistamp.core.profiles.deepspeed import INFO_MODULE, read_info

        with zipfile.ZipFile(path) as zf:
            if INFO_MODULE in zf.namelist():
                ds = read_info(zf.read(INFO_MODULE).decode("utf-8"))
                data["deepspeed"] = {"torch_info": ds.get("torch_info"),
                                     "installed_ops": sorted(k for k, v in
                                                             (ds.get("installed_ops") or {})
                                                             .items() if v)}
    return data


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
        if extras:
            row("notes", ", ".join(extras))
        profile = r.get("profile")
        if profile:
            ti = profile.get("torch_info") or {}
            ops = ", ".join(profile.get("installed_ops") or []) or "none"
            row("profile", f"{profile.get('name')}: ops {ops}; "
                f"torch_info {ti.get('version')} cuda {ti.get('cuda_version')}")
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
    if d.get("deepspeed"):
        ti = d["deepspeed"]["torch_info"] or {}
        row("deepspeed", f"torch_info {ti.get('version')} cuda {ti.get('cuda_version')}; ops "
            f"{', '.join(d['deepspeed']['installed_ops']) or 'none'}")
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
