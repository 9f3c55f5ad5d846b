"""`abistamp check`: does what is installed in an environment match the torch installed there?

Everything is read from files, nothing is imported: an environment's torch from
`torch/version.py` and its `.dist-info`, each distribution's `abistamp.json` from its
`.dist-info` (editable installs carry one too), DeepSpeed's `torch_info` from
`deepspeed/git_version_info_installed.py` (stamped or not), and the CPU from /proc/cpuinfo. A
GPU is asked about (`nvidia-smi`) only when a record says CUDA code was compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from abistamp.core.abi import TorchABI
from abistamp.core.cpu import cpu_problems, host_cpu_flags
from abistamp.core.errors import AbistampError
from abistamp.core.profiles import Installed, Profile, all_profiles
from abistamp.core.record import RECORD_NAME, abi_fields, from_json, to_abi

from .common import EXIT_MISMATCH, EXIT_OK


@dataclasses.dataclass
class Finding:
    name: str
    version: str
    source: str  # "abistamp.json" or "deepspeed torch_info"
    built_for: str
    status: str  # "ok", "MISMATCH" or "unknown"
    problems: list[str]
    fix: str | None
    editable: bool
    location: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    python: str
    site_packages: list[str]
    torch: TorchABI | None
    cpu_flags: set[str]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(f.status != "MISMATCH" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "site_packages": self.site_packages,
            "torch": abi_fields(self.torch) if self.torch else None,
            "machine": platform.machine(),
            "ok": self.ok,
            "results": [f.as_json() for f in self.findings],
        }


def check_environment(python: Path) -> Report:
    from .envs import site_dirs

    sites = site_dirs(python)
    from abistamp.core.abi import read_installed

    torch = read_installed(sites)
    host_flags = host_cpu_flags()
    findings: list[Finding] = []
    profiles = {p.name: p for p in all_profiles()}
    seen: set[str] = set()
    gpus: list[str] | None = None
    for site in sites:
        for dist_info in sorted(site.glob("*.dist-info")):
            record_file = dist_info / RECORD_NAME
            if not record_file.is_file():
                continue
            try:
                record = from_json(record_file.read_bytes(), f"`{record_file}`")
            except OSError as e:
                findings.append(_unreadable(dist_info, str(e)))
                continue
            except AbistampError as e:
                findings.append(_unreadable(dist_info, e.problem))
                continue
            name, version = _dist_name_version(dist_info)
            editable = bool(record.get("editable")) or _is_editable(dist_info)
            problems = record_problems(record, torch)
            profile = record.get("profile") or {}
            problems += cpu_problems(profile.get("cpu"), host_flags)
            if record.get("compiled_cuda") and record.get("cuda_arch_list"):
                if gpus is None:
                    gpus = gpu_capabilities()
                problems += arch_problems(str(record["cuda_arch_list"]), gpus)
            own = profiles.get(canonicalize_name(name))
            if own is not None:
                seen.add(own.name)
                installed = own.installed(sites, torch)
                if installed is not None:
                    problems += installed.problems
            built = f"torch {record.get('torch')} ({record.get('accelerator')})"
            findings.append(Finding(
                name=name, version=version, source=RECORD_NAME, built_for=built,
                status="MISMATCH" if problems else "ok", problems=problems,
                fix=_fix(name, record, torch, editable) if problems else None,
                editable=editable, location=str(dist_info)))
    for profile in profiles.values():
        if profile.name not in seen:
            installed = profile.installed(sites, torch)
            if installed is not None:
                findings.append(profile_finding(profile, installed, sites))
    return Report(str(python), [str(s) for s in sites], torch, host_flags, findings)


def record_problems(record: dict[str, Any], torch: TorchABI | None) -> list[str]:
    if torch is None:
        return [f"built for torch {record.get('torch')}, but torch is not installed"]
    try:
        built = to_abi(record)
        if (built.major, built.minor) != (torch.major, torch.minor):
            return [f"built for torch {built.torch_version}, installed torch is "
                    + torch.torch_version]
        if built.accelerator != torch.accelerator:
            found = f"installed torch {torch.torch_version} is {torch.accelerator}"
            return [f"built for {built.accelerator} (torch {built.torch_version}), {found}"]
    except (KeyError, ValueError) as e:
        return [f"the record cannot be read ({type(e).__name__}: {e})"]
    pin = record.get("pin")
    if pin:
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            if not Requirement(pin).specifier.contains(torch.torch_version, prereleases=True):
                return [f"installed torch {torch.torch_version} does not satisfy the pin `{pin}`"]
        except InvalidRequirement:
            pass
    return []


def gpu_capabilities() -> list[str]:
    """Compute capabilities of the GPUs here (`9.0`), from nvidia-smi; [] without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({line.strip() for line in out.splitlines() if line.strip()[:1].isdigit()})


def arch_problems(arch_list: str, gpus: list[str]) -> list[str]:
    """Whether each GPU here can run code compiled for TORCH_CUDA_ARCH_LIST `arch_list`."""
    entries = [e for e in arch_list.replace(",", ";").replace(" ", ";").split(";") if e]
    cubins, ptx = set(), []
    for entry in entries:
        base = entry.removesuffix("+PTX")
        cubins.add(_cap(base))
        if entry.endswith("+PTX"):
            ptx.append(_cap(base))
    problems = []
    for gpu in gpus:
        cap = _cap(gpu)
        # SASS runs on the same major with an equal or higher minor; PTX is JIT-compiled for
        # any newer GPU.
        if not any(c[0] == cap[0] and c <= cap for c in cubins) and not any(
                p <= cap for p in ptx):
            problems.append(f"compiled for CUDA archs {arch_list}; this GPU is sm_{gpu}")
    return problems


def _cap(text: str) -> tuple[int, int]:
    major, _, minor = text.strip().partition(".")
    try:
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def profile_finding(profile: Profile, installed: Installed, sites: list[Path]) -> Finding:
    """A project that recorded its own build without an ABI record (DeepSpeed's torch_info)."""
    version = installed.version or "?"
    for site in sites:
        for dist_info in site.glob(f"{profile.name}-*.dist-info"):
            version = _dist_name_version(dist_info)[1]
    problems = installed.problems
    return Finding(
        name=profile.name, version=version, source=installed.source,
        built_for=installed.built_for,
        status="MISMATCH" if problems else ("ok" if installed.known else "unknown"),
        problems=problems, fix=installed.fix if problems else None,
        editable=site_of(installed.location, sites) is None, location=str(installed.location))


def site_of(path: Path, sites: list[Path]) -> Path | None:
    for site in sites:
        if site in path.parents:
            return site
    return None


def _fix(name: str, record: dict[str, Any], torch: TorchABI | None, editable: bool) -> str:
    if editable:
        return (f"rebuild {name} in place against the installed torch "
                "(pip install --no-build-isolation -e SRC, or uv sync), or switch torch back to "
                f"{record.get('torch')}")
    want = torch.torch_version if torch else "the torch you install"
    return (f"install the {name} wheel built for torch {want} (abistamp build ... --torch "
            f"torch=={want}), or switch torch back to {record.get('torch')}")


def _dist_name_version(dist_info: Path) -> tuple[str, str]:
    name = version = None
    try:
        with (dist_info / "METADATA").open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
    except OSError:
        pass
    stem_name, _, stem_version = dist_info.name[: -len(".dist-info")].partition("-")
    return name or stem_name, version or stem_version


def _is_editable(dist_info: Path) -> bool:
    try:
        data = json.loads((dist_info / "direct_url.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(data, dict) and data.get("dir_info", {}).get("editable"))


def _unreadable(dist_info: Path, why: str) -> Finding:
    name, version = _dist_name_version(dist_info)
    return Finding(name, version, RECORD_NAME, "?", "unknown", [f"unreadable record: {why}"],
                   "reinstall the distribution", False, str(dist_info))


def render_table(report: Report) -> str:
    torch = report.torch
    lines = [
        f"python:  {report.python}",
        "torch:   " + (f"{torch.torch_version} ({torch.accelerator})" if torch
                       else "not installed"),
    ]
    if not report.findings:
        lines.append("no distribution here carries an abistamp record or DeepSpeed torch_info")
        return "\n".join(lines) + "\n"
    rows = [("DISTRIBUTION", "VERSION", "BUILT FOR", "STATUS")]
    for f in report.findings:
        rows.append((f.name + (" (editable)" if f.editable else ""), f.version, f.built_for,
                     f.status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append("")
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for f in report.findings:
        for p in f.problems:
            lines.append(f"{f.name}: {p}")
        if f.fix:
            lines.append(f"  fix: {f.fix}")
    mismatches = sum(f.status == "MISMATCH" for f in report.findings)
    lines.append("")
    lines.append(f"{mismatches} mismatch(es) in {len(report.findings)} checked" if mismatches
                 else f"all {len(report.findings)} match the installed torch")
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("For every installed distribution with an abistamp record (editable "
    "installs included) and for DeepSpeed's torch_info, compare with the installed torch; "
    "also CPU flags and, with a GPU, CUDA archs. Reads files only: no import of torch. "
    "Exit code 1 on any mismatch.")
EPILOG = ("examples:\n  abistamp check                 # $VIRTUAL_ENV, ./.venv, or this "
    "python\n  abistamp check --python .venv --json\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--python", metavar="PATH", help="the environment's python or folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from .envs import default_python, resolve_python

    python = resolve_python(args.python) if args.python else default_python()
    report = check_environment(python)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_table(report))
    return EXIT_OK if report.ok else EXIT_MISMATCH
