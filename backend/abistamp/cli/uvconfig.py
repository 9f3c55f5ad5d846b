"""`abistamp uv-config`: the uv project configuration that routes each extra to one ABI.

From a wheelhouse's manifest: which packages each ABI folder holds, which torch each was built
against and where that torch came from. The output is TOML to paste into a uv project's
pyproject.toml: one explicit index per ABI folder (flat or PEP 503), `[tool.uv.sources]`
entries that send each package (and torch) to the index of each extra, the `conflicts` that let
the extras have different versions, and `environments` limited to the platforms the wheels are
for. With `--source-build`, the configuration for building the packages from source instead:
`extra-build-dependencies` with `match-runtime` (so uv's build cache keeps one build per torch),
and the settings and environment variables the wheelhouse builds used. With `--single-index`,
one index over every ABI (the wheelhouse's `simple/` or `all.html`) and no routing per extra:
each wheel's exact torch pin lets the resolver pick it per extra (refused where a pin would
accept another extra's torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from abistamp.core.errors import AbistampError

from .common import EXIT_MISMATCH, EXIT_OK
from .wheelhouse import ALL_PAGE, Wheelhouse

SINGLE_INDEX = "abistamp"  # the index name of `--single-index`
_EXTRA = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclasses.dataclass(frozen=True)
class Route:
    extra: str
    label: str
    packages: dict[str, list[str]]  # canonical name -> wheel filenames in the ABI folder
    torch_version: str | None
    torch_index: tuple[str, str] | None  # (url, "flat" | "simple")
    entries: list[dict[str, Any]]


def parse_extras(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        extra, sep, label = pair.partition("=")
        extra = str(canonicalize_name(extra.strip()))
        if not sep or not extra or not label.strip() or not _EXTRA.match(extra):
            raise AbistampError(f"`--extra {pair}` is not of the form NAME=ABI",
                                "write it as `--extra cpu=pt213cpu` (the extra, then an ABI "
                                "folder of the wheelhouse)")
        out.append((extra, label.strip()))
    if len({e for e, _ in out}) != len(out):
        raise AbistampError("an extra is named twice in `--extra`", "name each extra once")
    return out


def plan_routes(wheelhouse: Wheelhouse, extras: list[tuple[str, str]],
                packages: list[str] | None) -> list[Route]:
    if not wheelhouse.root.is_dir():
        raise AbistampError(f"the wheelhouse `{wheelhouse.root}` does not exist",
                            "pass the folder that `abistamp build -o` wrote")
    manifest = wheelhouse.load()
    available = wheelhouse.labels()
    wanted = {str(canonicalize_name(p)) for p in packages} if packages else None
    routes = []
    for extra, label in extras:
        folder = wheelhouse.root / label
        if label not in available:
            raise AbistampError(
                f"the wheelhouse `{wheelhouse.root}` has no ABI folder `{label}` with wheels",
                "use one of: " + (", ".join(available) or "(none: build into it first)"))
        by_name: dict[str, list[str]] = {}
        for wheel in sorted(folder.glob("*.whl")):
            name = str(parse_wheel_filename(wheel.name)[0])
            if wanted is None or name in wanted:
                by_name.setdefault(name, []).append(wheel.name)
        if wanted:
            missing = sorted(wanted - set(by_name))
            if missing:
                raise AbistampError(f"`{label}` holds no wheel of {', '.join(missing)}",
                                    "build it for this ABI first, or drop the `--package`")
        entries = [e for e in manifest["variants"].values() if e.get("label") == label
                   and (wanted is None or e.get("name") in wanted)]
        versions = {str((e.get("torch") or {}).get("version")) for e in entries
                    if (e.get("torch") or {}).get("version")}
        torch_version = (str(max(versions, key=Version)) if versions
                         else _torch_from_wheels(folder))
        routes.append(Route(extra, label, by_name, torch_version, _torch_index(entries),
                            entries))
    return routes


def _torch_from_wheels(folder: Path) -> str | None:
    from abistamp.core.stamp import read_wheel

    for wheel in sorted(folder.glob("*.whl")):
        record = read_wheel(wheel).abi_record
        if record and record.get("torch"):
            return str(record["torch"])
    return None


def _torch_index(entries: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Where the builds of this ABI got torch, as a uv index: find-links are flat indexes."""
    for entry in entries:
        torch = entry.get("torch") or {}
        for link in torch.get("find_links") or []:
            path = Path(link)
            if "://" not in link and path.is_dir():
                if any(path.glob("torch-*.whl")):
                    return (path.resolve().as_uri(), "flat")
            elif "://" in link:
                return (link, "flat")
        urls = [*(torch.get("extra_index_urls") or []), torch.get("index_url")]
        for url in urls:
            if url:
                return (str(url), "simple")
    return None


def check_single_index(wheelhouse: Wheelhouse, routes: list[Route]) -> None:
    """Refuse a single index in which some extra's torch would accept another ABI's wheel.

    With every ABI in one index nothing routes a package per extra: the resolver takes, for
    each extra, the newest wheel whose `Requires-Dist` torch pin the extra's torch satisfies.
    That is the right wheel only when no other ABI's wheel accepts that torch, which fails
    when two torches differ only in their local label and the pins do not carry it (FACTS.md:
    `torch==2.5.*` and `==2.5.1` both accept 2.5.1+cu121 and 2.5.1+cu124).
    """
    from packaging.version import Version

    for b in routes:
        if not b.torch_version:
            continue
        torch = Version(b.torch_version)
        for a in routes:
            for files in a.packages.values() if a is not b else ():
                for fn in files:
                    pins = _torch_pins(wheelhouse.root / a.label / fn)
                    if all(p.specifier.contains(torch, prereleases=True) for p in pins):
                        shown = ", ".join(f"`{p}`" for p in pins) or "no torch pin"
                        raise AbistampError(
                            f"in one index extra `{b.extra}` (torch {b.torch_version}) could "
                            f"get `{a.label}/{fn}`: it has {shown}, which torch "
                            f"{b.torch_version} satisfies too",
                            "stamp the wheels with exact pins (`-C abistamp.pin=exact`: the "
                            "pin then carries torch's local label), or route each extra to its "
                            "ABI folder (leave out `--single-index`)")


def _torch_pins(wheel: Path) -> list[Requirement]:
    """The wheel's unconditional `Requires-Dist` requirements on torch."""
    from abistamp.core.stamp import metadata_fields, read_wheel

    pins = []
    for text in metadata_fields(read_wheel(wheel).metadata, "Requires-Dist"):
        req = Requirement(text)
        if canonicalize_name(req.name) == "torch" and (
                req.marker is None or req.marker.evaluate({"extra": ""})):
            pins.append(req)
    return pins


def render(wheelhouse: Wheelhouse, routes: list[Route], *, fmt: str | None = None,
           base_url: str | None = None, with_torch: bool = True,
           source_build: bool = False, single_index: bool = False) -> str:
    if single_index:
        check_single_index(wheelhouse, routes)
    fmt = fmt or ("simple" if single_index else "flat")
    out: list[str] = []
    names = sorted({n for r in routes for n in r.packages})
    tags = _wheel_tags(wheelhouse, routes)
    out.append(f"# Generated by `abistamp uv-config` from {wheelhouse.root}")
    out.append("# Merge into your uv project's pyproject.toml (keep tables you already have).")
    py = sorted({t[0] for t in tags if t[0].startswith("cp")})
    if len(py) == 1:
        minor = py[0][3:]
        out.append(f'# The wheels are for CPython {py[0][2]}.{minor}: set '
                   f'`requires-python = "=={py[0][2]}.{minor}.*"` in [project].')
    out.append("")
    out.append("[project.optional-dependencies]")
    for r in routes:
        reqs = ([f"torch=={r.torch_version}"] if r.torch_version else []) + sorted(r.packages)
        out.append(f"{r.extra} = [{', '.join(json.dumps(x) for x in reqs)}]")
    out.append("")
    out.append("[tool.uv]")
    if len(routes) > 1:
        pairs = ", ".join(f'{{ extra = "{r.extra}" }}' for r in routes)
        out.append(f"conflicts = [[{pairs}]]")
    envs = _environments(tags)
    if envs:
        out.append(f"environments = [{json.dumps(envs)}]")
    if source_build:
        out.append("")
        out.append("# Each package is built from source against the torch of the extra being "
                   "synced:")
        out.append("# match-runtime installs that torch into its build environment and puts "
                   "it into uv's")
        out.append("# build-cache key, so every torch gets (and keeps) its own build.")
        out.append("[tool.uv.extra-build-dependencies]")
        for name in names:
            out.append(f'{name} = [{{ requirement = "torch", match-runtime = true }}]')
        settings, variables, differing = _build_inputs(routes)
        if differing:
            out.append("")
            out.append(f"# Not carried over: {', '.join(differing)} differed between the "
                       "wheelhouse's builds, and a")
            out.append("# source build's settings are per package, the same for every extra.")
        if variables:
            out.append("")
            out.append("[tool.uv.extra-build-variables]")
            for name in names:
                out.append(f"{name} = {_inline(variables)}")
        if settings:
            out.append("")
            out.append("[tool.uv.config-settings-package]")
            for name in names:
                out.append(f"{name} = {_inline(settings)}")
    out.append("")
    out.append("[tool.uv.sources]")
    if single_index and not source_build:
        out.append("# One index holds every ABI: the torch of each extra selects the wheel "
                   "whose torch pin it")
        out.append("# satisfies, by resolution alone (no routing per extra).")
        out += [f'{name} = {{ index = "{SINGLE_INDEX}" }}' for name in names]
    elif not source_build:
        for name in names:
            items = [f'    {{ index = "{_index_name(r.label)}", extra = "{r.extra}" }},'
                     for r in routes if name in r.packages]
            out += [f"{name} = [", *items, "]"]
    torch_indexes: dict[str, tuple[str, str]] = {}
    if with_torch:
        items = []
        shared = len({r.torch_index[0] for r in routes if r.torch_index}) == 1
        for r in routes:
            if r.torch_index:
                name = "torch" if shared else f"torch-{r.label}"
                index = torch_indexes.setdefault(r.torch_index[0], (name, r.torch_index[1]))
                items.append(f'    {{ index = "{index[0]}", extra = "{r.extra}" }},')
        if items:
            out += ["torch = [", *items, "]"]
        elif source_build:
            out.append("# torch comes from your default index")
    if single_index and not source_build:
        out += _index_table(SINGLE_INDEX, *_abi_url(wheelhouse, None, fmt, base_url))
    elif not source_build:
        for r in routes:
            out += _index_table(_index_name(r.label), *_abi_url(wheelhouse, r.label, fmt,
                                                                base_url))
    for url, (name, kind) in torch_indexes.items():
        note = ("# match-runtime needs torch from a PEP 503 index; uv 0.13 does not find it "
                "in a flat one") if source_build else None
        out += _index_table(name, url, kind, note)
    return "\n".join(out) + "\n"


def _index_table(name: str, url: str, kind: str, flat_note: str | None = None) -> list[str]:
    lines = ["", "[[tool.uv.index]]", f'name = "{name}"', f'url = "{url}"']
    if kind == "flat":
        lines += [flat_note] if flat_note else []
        lines.append('format = "flat"')
    return [*lines, "explicit = true"]


def _index_name(label: str) -> str:
    return f"abistamp-{label}"


def _abi_url(wheelhouse: Wheelhouse, label: str | None, fmt: str, base_url: str | None
             ) -> tuple[str, str]:
    """The index of one ABI folder, or (label None) the one over every ABI."""
    folder = wheelhouse.root / label if label else wheelhouse.root
    if base_url:
        root = base_url.rstrip("/") + ("/" + label if label else "")
    else:
        root = folder.resolve().as_uri()
    if fmt == "simple":
        return root + "/simple/", "simple"
    return (root + "/" + ("" if label else ALL_PAGE)), "flat"


def _wheel_tags(wheelhouse: Wheelhouse, routes: list[Route]) -> set[tuple[str, str, str]]:
    tags = set()
    for r in routes:
        for files in r.packages.values():
            for fn in files:
                for tag in parse_wheel_filename(fn)[3]:
                    tags.add((tag.interpreter, tag.abi, tag.platform))
    return tags


def _environments(tags: set[tuple[str, str, str]]) -> str | None:
    """One environment marker covering the platforms every wheel supports, if they narrow it."""
    platforms = {t[2] for t in tags}
    if not platforms or "any" in platforms:
        return None
    systems, machines = set(), set()
    for p in platforms:
        for system in ("linux", "macosx", "win"):
            if p.startswith(system) or (system == "linux" and "linux" in p):
                systems.add({"macosx": "darwin", "win": "win32"}.get(system, system))
                break
        for machine in ("x86_64", "aarch64", "arm64", "amd64", "ppc64le", "s390x"):
            if p.endswith(machine):
                machines.add("AMD64" if machine == "amd64" else machine)
    if len(systems) != 1 or len(machines) != 1:
        return None
    return f"sys_platform == '{systems.pop()}' and platform_machine == '{machines.pop()}'"


def _build_inputs(routes: list[Route]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Config settings and environment variables the wheelhouse builds had in common, and the
    names of those that differ between builds (a source build's inputs are per package, the
    same for every extra, so those can't be carried over)."""
    seen_settings: list[dict[str, str]] = []
    seen_variables: list[dict[str, str]] = []
    for r in routes:
        for e in r.entries:
            seen_settings.append({k: v if isinstance(v, str) else str(v[-1])
                                  for k, v in (e.get("config_settings") or {}).items()
                                  if k not in ("abistamp.torch", "abistamp.local-version")})
            seen_variables.append({k: str(v) for k, v in (e.get("environment") or {}).items()
                                   if not k.startswith("ABISTAMP_")})

    def common(dicts: list[dict[str, str]]) -> tuple[dict[str, str], set[str]]:
        keys = {k for d in dicts for k in d}
        same = {k: dicts[0][k] for k in keys
                if all(k in d and d[k] == dicts[0][k] for d in dicts)}
        return same, keys - set(same)

    settings, odd_settings = common(seen_settings) if seen_settings else ({}, set())
    variables, odd_variables = common(seen_variables) if seen_variables else ({}, set())
    return settings, variables, sorted(odd_settings | odd_variables)


def _inline(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in
                            sorted(values.items())) + " }"


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Print the pyproject.toml tables that make a uv project install each extra's "
    "wheels from one ABI folder of WHEELHOUSE (with --source-build: build them from source "
    "per torch instead).")
EPILOG = ("examples:\n  abistamp uv-config wheelhouse --extra cpu=pt213cpu --extra "
    "cu130=pt214cu130\n  abistamp uv-config wheelhouse --extra cpu=pt213cpu --format simple "
    "--base-url https://wheels.example.com/wh\n"
    "  abistamp uv-config --check pyproject.toml   # exit 1 if uv would reuse a torch build\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheelhouse", metavar="WHEELHOUSE", nargs="?")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=ABI",
                   help="an extra of your project and the ABI folder it installs from")
    p.add_argument("--check", metavar="PYPROJECT", nargs="?", const="pyproject.toml",
                   help="instead: read a uv project and report dependencies built against "
                   "torch that nothing makes uv rebuild for another torch (exit 1 if any)")
    p.add_argument("--package", action="append", default=[], metavar="NAME",
                   help="only these packages (default: every package in those folders)")
    p.add_argument("--format", choices=("flat", "simple"),
                   help="index kind: flat (the folder's index.html) or simple (PEP 503); "
                   "default flat, and simple with --single-index")
    p.add_argument("--base-url", metavar="URL",
                   help="where the wheelhouse is served (default: its local file:// URL)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave torch's index to your own configuration")
    p.add_argument("--source-build", action="store_true",
                   help="configure source builds with match-runtime instead of the wheels")
    p.add_argument("--single-index", action="store_true",
                   help="one index holding every ABI (WHEELHOUSE/simple/, or all.html with "
                   "--format flat): each extra's torch pin selects its wheels by resolution")


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        return run_check(Path(args.check))
    if args.wheelhouse is None or not args.extra:
        raise AbistampError("`abistamp uv-config` needs a WHEELHOUSE and at least one --extra",
                            "run `abistamp uv-config WHEELHOUSE --extra NAME=ABI`, or "
                            "`abistamp uv-config --check pyproject.toml`")

    wheelhouse = Wheelhouse(Path(args.wheelhouse))
    routes = plan_routes(wheelhouse, parse_extras(args.extra), args.package or None)
    sys.stdout.write(render(wheelhouse, routes, fmt=args.format, base_url=args.base_url,
                            with_torch=not args.no_torch, source_build=args.source_build,
                            single_index=args.single_index))
    return EXIT_OK


def run_check(pyproject: Path) -> int:
    """`abistamp uv-config --check`: see uvcheck.py."""
    from .uvcheck import check_project

    findings, notes = check_project(pyproject)
    for note in notes:
        print(note)
    for f in findings:
        print(f"{f.package}: {f.why}, and nothing makes uv build it again for another torch\n"
              f"  fix: {f.fix}")
    if findings:
        print(f"{len(findings)} dependenc{'y' if len(findings) == 1 else 'ies'} would reuse a "
              f"build made for another torch ({pyproject})")
        return EXIT_MISMATCH
    print(f"ok: no dependency built against torch is left to uv's source cache ({pyproject})")
    return EXIT_OK
