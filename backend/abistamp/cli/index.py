"""`abistamp index`: merge wheelhouses built on different machines into one, and index it.

Each CI runner builds its cells into a wheelhouse of its own (`abistamp build -o`); the final
job merges them: every input's ABI folders into OUT, the manifests into OUT's (each wheel and
variant remembers the wheelhouse it came from), and then the pages over OUT are written by the
wheelhouse's own writers (wheelhouse.py): per ABI folder a flat page and a PEP 503 index, and
over every ABI `simple/` and `all.html`. All links are relative: OUT can be served by any
static file server or synced to a bucket as it is.

An input may also be a folder filled by hand, without a manifest: ABI folders of stamped
wheels (as `uv build --wheel --out-dir wheelhouse/pt213cpu` makes them, docs/deepspeed.md), or
one folder of stamped wheels, each of which goes to the ABI folder its record names. OUT may
be such a folder itself (`abistamp index wheelhouse -o wheelhouse`): its pages and manifest are
then written in place. The wheels' ABI records are what such inputs are read and checked by.

A filename never names two contents (uv and pip cache wheels by filename: FACTS.md): two
different files under one name are refused before anything is written. Identical files are
one wheel. Merging into an OUT that already holds wheels adds to it; pages and the manifest are
rewritten only where their content changes, and wheels already there are not copied again.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from abistamp import __version__
from abistamp.core.errors import AbistampError

from .common import EXIT_OK
from .pages import ALL_PAGE
from .wheelhouse import (
    MANIFEST_NAME,
    Wheelhouse,
    file_facts,
    place_file,
    sha256_file,
    wheel_identity,
)


@dataclasses.dataclass(frozen=True)
class Wheel:
    rel: str  # "<label>/<filename>", the same in every wheelhouse
    path: Path
    sha256: str
    origin: str  # the folder name of the wheelhouse it came from (the CI artifact's name)


@dataclasses.dataclass
class Merged:
    out: Path
    added: dict[str, list[str]]  # input -> rels copied into OUT
    already: dict[str, list[str]]  # input -> rels OUT already had, byte for byte
    pages: list[Path]  # pages (and the manifest) whose content changed
    labels: list[str]
    wheels: int


@dataclasses.dataclass
class Source:
    """One input: a wheelhouse, or a folder filled by hand (manifest then empty)."""

    root: Path
    manifest: dict[str, Any]
    wheels: dict[str, Path]  # "<label>/<filename>" -> the file
    by_record: bool = False  # a plain folder of wheels: each goes where its record says


def _wheels(wheelhouse: Wheelhouse) -> dict[str, Path]:
    return {f"{label}/{w.name}": w for label in wheelhouse.labels()
            for w in sorted((wheelhouse.root / label).glob("*.whl"))}


def _by_record(folder: Path, out: Path) -> dict[str, Path]:
    """A plain folder of stamped wheels, each under the ABI folder its record names."""
    from abistamp.core.stamp import read_wheel

    found = {}
    for wheel in sorted(folder.glob("*.whl")):
        label = str((read_wheel(wheel).abi_record or {}).get("label") or "")
        if not label:
            raise AbistampError(f"`{wheel}` carries no abistamp ABI record; nothing was "
                                f"written to `{out}`",
                                "stamp it first (`abistamp stamp WHEEL --python ENV -o DIR`, "
                                "ENV having the torch it was built with), or leave it out")
        found[f"{label}/{wheel.name}"] = wheel
    return found


def _inputs(paths: list[Path], out: Path) -> list[Source]:
    seen: set[Path] = set()
    found = []
    for path in paths:
        root = path.resolve()
        if not root.is_dir():
            raise AbistampError(f"the wheelhouse `{path}` does not exist",
                                "pass the folders that `abistamp build -o` wrote, or folders "
                                "of stamped wheels")
        # OUT is merged into as it is; naming it among the inputs adds nothing.
        if root in seen or root == out.resolve():
            continue
        seen.add(root)
        wheelhouse = Wheelhouse(root)
        if wheelhouse.manifest_path.is_file() or wheelhouse.labels():
            found.append(Source(root, wheelhouse.load(), _wheels(wheelhouse)))
        elif any(root.glob("*.whl")):
            found.append(Source(root, wheelhouse.load(), _by_record(root, out),
                                by_record=True))
        else:
            raise AbistampError(
                f"`{path}` is not a wheelhouse: it has no `{MANIFEST_NAME}`, no ABI folders "
                "with wheels and no wheels",
                "pass the folder that `abistamp build -o` wrote, a folder of ABI folders of "
                "stamped wheels (as `uv build --wheel --out-dir wheelhouse/pt213cpu` makes "
                "them), or a folder of stamped wheels")
    return found


def _check_folder(rel: str, path: Path, out: Wheelhouse) -> None:
    """Refuse a wheel whose ABI record names another folder than the one it is in.

    The folder is the ABI's identity (a per-ABI index); a wheel moved or copied by hand into
    the wrong one would be offered to every environment of that ABI.
    """
    from abistamp.core.stamp import read_wheel

    folder = rel.split("/", 1)[0]
    record = read_wheel(path).abi_record  # refuses a corrupt wheel, naming it
    label = str((record or {}).get("label") or "")
    if not label:
        raise AbistampError(f"`{path}` carries no abistamp ABI record; nothing was written to "
                            f"`{out.root}`",
                            "build it with `abistamp build` (or stamp it with `abistamp stamp "
                            "--abi-from`) before merging")
    if label != folder:
        raise AbistampError(f"`{path}` is in the ABI folder `{folder}` but its ABI record says "
                            f"`{label}`; nothing was written to `{out.root}`",
                            f"move it to the `{label}/` folder of its wheelhouse, or rebuild "
                            f"that wheelhouse with `abistamp build -o`")


def plan(inputs: list[Source], out: Wheelhouse, manifest: dict[str, Any],
         hashes: dict[Path, str]) -> tuple[list[tuple[Source, Wheel]],
                                           list[tuple[Source, Wheel]]]:
    """(wheels to copy into OUT, wheels OUT or an earlier input already has), or the error.

    Input wheels are hashed afresh (they come from other machines, and the pages will publish
    their sha256); OUT's own are taken from its manifest where the size still matches.
    """
    # Keyed by what installers see, not by the spelling: `Foo_Bar-1.0-...` and `foo_bar-1.0-...`
    # (setuptools versions differ in this) are one wheel to pip and uv.
    by_name: dict[Any, Wheel] = {}
    if out.root.is_dir():
        for rel, path in _wheels(out).items():
            facts = manifest["files"].get(rel) or {}
            if not facts and path not in hashes:
                # A wheel put into OUT by hand (OUT a folder filled by `uv build --out-dir`):
                # checked as an input's would be before OUT's pages offer it.
                _check_folder(rel, path, out)
                hashes[path] = sha256_file(path)
            digest = hashes.get(path) or out.file_sha(manifest, path)
            by_name[wheel_identity(path.name)] = Wheel(rel, path, digest,
                                                       str(facts.get("origin") or out.root.name))
    add: list[tuple[Source, Wheel]] = []
    same: list[tuple[Source, Wheel]] = []
    conflicts: list[tuple[Wheel, Wheel]] = []
    for wheelhouse in inputs:
        for rel, path in wheelhouse.wheels.items():
            if path not in hashes:
                if not wheelhouse.by_record:
                    _check_folder(rel, path, out)
                hashes[path] = sha256_file(path)
            wheel = Wheel(rel, path, hashes[path], wheelhouse.root.name)
            known = by_name.get(wheel_identity(path.name))
            if known is None:
                by_name[wheel_identity(path.name)] = wheel
                add.append((wheelhouse, wheel))
            elif known.sha256 == wheel.sha256 and known.rel == wheel.rel:  # the same file
                same.append((wheelhouse, wheel))
            else:
                conflicts.append((known, wheel))
    if conflicts:
        first, second = conflicts[0]
        more = f" ({len(conflicts) - 1} more name(s) like it)" if len(conflicts) > 1 else ""
        if first.sha256 != second.sha256:
            raise AbistampError(
                f"`{first.path}` and `{second.path}` are different files under one name "
                f"(sha256 {first.sha256[:12]}... and {second.sha256[:12]}...){more}; uv and pip "
                f"cache wheels by filename, so one index must not offer both; nothing was "
                f"written to `{out.root}`",
                "bump the build number: rebuild that cell with `abistamp build ... "
                "-C abistamp.build-number=2` (or leave one of the two wheelhouses out)")
        raise AbistampError(
            f"`{first.path}` and `{second.path}` are one wheel in two ABI folders{more}; "
            f"nothing was written to `{out.root}`",
            f"keep it only in the folder its ABI label names (`{first.rel}`)")
    return add, same


def merge(paths: list[Path], out_dir: Path) -> Merged:
    out = Wheelhouse(out_dir)
    inputs = _inputs(paths, out.root)
    hashes: dict[Path, str] = {}
    # Checked before the lock, whose file would be OUT's first change: a refused merge leaves
    # OUT as it was, or absent. Checked again under the lock (the hashes are kept) because
    # another run may have published into OUT in between.
    plan(inputs, out, out.load(), hashes)
    with out.locked():
        manifest = out.load()
        add, same = plan(inputs, out, manifest, hashes)
        manifests = {w.root: w.manifest for w in inputs}
        entries: dict[str, Any] = {}
        for wheelhouse, wheel in add:
            target = out.root / wheel.rel
            place_file(wheel.path, target)
            facts = manifests[wheelhouse.root]["files"].get(wheel.rel) or {}
            manifest["files"][wheel.rel] = {**file_facts(target, wheel.sha256),
                                            "origin": str(facts.get("origin") or wheel.origin)}
        for wheelhouse in inputs:
            for key, entry in manifests[wheelhouse.root]["variants"].items():
                facts = manifest["files"].get(entry.get("wheel"))
                # An entry whose wheel is not the file now in OUT would make `abistamp build`
                # skip a variant whose wheel is not there.
                if facts is None or entry.get("sha256") not in (None, facts["sha256"]):
                    continue
                entries[key] = {**entry, "origin": entry.get("origin") or wheelhouse.root.name}
        for key, entry in entries.items():
            if manifest["variants"].get(key, {}).get("wheel") != entry.get("wheel"):
                manifest["variants"][key] = entry
        # Folder names, not paths: the published manifest says which artifact a wheel came from
        # (`wheelhouse-<cell>`), not where a runner unpacked it; a path would also change the
        # manifest, and so every sync, on each run.
        manifest["merged_from"] = sorted({*manifest.get("merged_from", []),
                                          *(w.root.name for w in inputs)})
        manifest["generator"] = f"abistamp {__version__}"
        pages = out.write_indexes(manifest)
        if out.save(manifest):
            pages.append(out.manifest_path)
    added: dict[str, list[str]] = {str(w.root): [] for w in inputs}
    already: dict[str, list[str]] = {str(w.root): [] for w in inputs}
    for wheelhouse, wheel in add:
        added[str(wheelhouse.root)].append(wheel.rel)
    for wheelhouse, wheel in same:
        already[str(wheelhouse.root)].append(wheel.rel)
    labels = out.labels()
    return Merged(out.root, added, already, pages, labels, len(_wheels(out)))


def render(merged: Merged) -> str:
    lines = []
    for source, rels in merged.added.items():
        have = merged.already[source]
        lines.append(f"{source}: {len(rels)} wheel(s) added, {len(have)} already there")
        lines += [f"  + {rel}" for rel in rels]
    lines.append(f"{merged.out}: {merged.wheels} wheel(s) in {len(merged.labels)} ABI "
                 f"folder(s) ({', '.join(merged.labels) or 'none'}); "
                 f"{len(merged.pages)} file(s) rewritten")
    lines += [f"  ~ {p.relative_to(merged.out).as_posix()}" for p in merged.pages]
    lines.append(f"PEP 503 index: {merged.out / 'simple'}/   flat page: "
                 f"{merged.out / ALL_PAGE}")
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Merge the ABI folders and manifests of WHEELHOUSE... into OUT (new, or "
    "existing: then they are added to it), refusing two different files under one name, "
    "and write OUT's pages: per ABI folder a flat page and a PEP 503 index, and over every "
    "ABI OUT/simple/ and OUT/all.html, with sha256 fragments and relative links. Only "
    "files whose content changes are rewritten.")
EPILOG = ("examples:\n  abistamp index artifacts/wh-* -o public\n"
    "  abistamp index new-cell/wheelhouse -o public    # add one cell to an existing "
    "index\n  abistamp index wheelhouse -o wheelhouse   # pages for folders `uv build "
    "--out-dir wheelhouse/pt213cpu` filled\n  python -m http.server -d public   # pip install --index-url "
    "http://HOST:8000/simple/ ...\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheelhouses", nargs="+", metavar="WHEELHOUSE",
                   help="folders written by `abistamp build -o` (OUT itself may be one), or "
                   "filled by hand: ABI folders of stamped wheels, or stamped wheels")
    p.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="the merged wheelhouse (created if missing)")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render(merge([Path(w) for w in args.wheelhouses], Path(args.out))))
    return EXIT_OK
