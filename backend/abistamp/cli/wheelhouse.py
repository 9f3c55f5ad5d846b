"""A wheelhouse of stamped wheels: one folder per ABI label, indexes, a manifest, a lock.

Layout (docs/cli.md)::

    WHEELHOUSE/
      abistamp-wheelhouse.json        the manifest: what was built from what
      index.html                      links to the ABI folders and the pages below, for people
      all.html                        flat index of every ABI (pip --find-links)
      simple/index.html               PEP 503 index of every ABI (one index, every ABI)
      simple/tiny-ext/index.html
      pt213cpu/                       one folder per ABI label
        tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl
        index.html                    flat index (pip --find-links, uv format = "flat")
        simple/index.html             PEP 503 index of this folder
        simple/tiny-ext/index.html

Every file is written to a temporary name beside its target and renamed into place, so a
reader never sees a partial wheel, index or manifest. Writers take an exclusive `flock` on
`.abistamp-wheelhouse.lock` around read-modify-write of the manifest and the indexes, so two
`abistamp build` runs into one wheelhouse serialize there (and only there: their builds run in
parallel). Readers (the skip check) read the manifest without the lock. The pages are
pages.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from abistamp import __version__
from abistamp.core.atomic import remove_stale_parts, replacing, write_if_changed
from abistamp.core.errors import AbistampError

from .pages import write_pages

MANIFEST_NAME = "abistamp-wheelhouse.json"
LOCK_NAME = ".abistamp-wheelhouse.lock"
MANIFEST_SCHEMA = 1


class Wheelhouse:
    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    # --- reading ------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The manifest, or an empty one. Lock-free: the file is only ever replaced whole."""
        try:
            data: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema": MANIFEST_SCHEMA, "variants": {}, "files": {}}
        except (OSError, ValueError) as e:
            raise AbistampError(f"`{self.manifest_path}` is not a readable manifest: {e}",
                                "restore it from a backup, or move it away to start afresh "
                                "(the wheels stay; variants are then built again)") from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != MANIFEST_SCHEMA:
            raise AbistampError(
                f"`{self.manifest_path}` has schema {schema!r}, not {MANIFEST_SCHEMA}",
                "use the abistamp version that wrote it, or move it away to start afresh")
        data.setdefault("variants", {})
        data.setdefault("files", {})
        return data

    def lookup(self, key: str, manifest: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The manifest entry of a variant, when its wheel is still there with its size."""
        entry: dict[str, Any] | None = (manifest or self.load())["variants"].get(key)
        if entry is None:
            return None
        try:
            if (self.root / entry["wheel"]).stat().st_size != entry["size"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
        return entry

    def labels(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.whl")))

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        from abistamp.core.atomic import file_lock

        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / LOCK_NAME):
            yield

    def publish(self, built: Path, entry: dict[str, Any], *, replace: bool,
                scratch: Path) -> tuple[dict[str, Any], str]:
        """Put a built wheel into its ABI folder and record the variant; returns (entry, note).

        A filename never names two contents: when the folder already has a wheel of this name
        with other bytes, the new one gets the next build number (a re-stamp, not a rebuild).
        """
        from abistamp.core.stamp import read_wheel

        key = entry["key"]
        with self.locked():
            manifest = self.load()
            existing = self.lookup(key, manifest)
            if existing is not None and not replace:
                return existing, "another run built this variant meanwhile; kept its wheel"
            info = read_wheel(built)
            record = info.abi_record
            if not record or not record.get("label"):
                raise AbistampError(f"`{built.name}` carries no abistamp record",
                                    "build it through the abistamp backend")
            label = str(record["label"])
            folder = self.root / label
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_parts(folder)
            remove_stale_parts(self.root)
            digest = sha256_file(built)
            note = "added"
            target = same_wheel_in(folder, built.name) or folder / built.name
            if target.exists():
                if self.file_sha(manifest, target) == digest:
                    note = "identical to the wheel already there"
                else:
                    old = target.name
                    same = self._same_under_other_number(manifest, built, folder, record,
                                                         scratch)
                    if same is not None:
                        built, note = same, f"identical to `{same.name}` already there"
                    else:
                        built = bump_build_number(built, folder, record, scratch)
                        note = f"`{old}` holds other bytes: build number bumped"
                    target = same_wheel_in(folder, built.name) or folder / built.name
                    digest = sha256_file(built)
            if not target.exists():
                place_file(built, target)
            rel = f"{label}/{target.name}"
            manifest["files"][rel] = file_facts(target, digest)
            info = read_wheel(target)
            entry = {**entry, "label": label, "name": str(canonicalize_name(info.name)),
                     "version": info.version, "wheel": rel, "sha256": digest,
                     "size": target.stat().st_size}
            manifest["variants"][key] = entry
            manifest["generator"] = f"abistamp {__version__}"
            self.write_indexes(manifest, [label])
            self.save(manifest)
        return entry, note

    def _same_under_other_number(self, manifest: dict[str, Any], built: Path, folder: Path,
                                 record: dict[str, Any], scratch: Path) -> Path | None:
        """A wheel already here that is `built` but for its build number (an earlier bump).

        Without this, every rebuild after a bump would compare with build 1 and bump again.
        Only the three newest numbers are tried: each try is a re-stamp (a file copy).
        """
        from abistamp.core.labels import build_tag
        from abistamp.core.record import restamp
        from abistamp.core.stamp import stamp_wheel

        name, version, build, tags = parse_wheel_filename(built.name)
        others = []
        for other in folder.glob("*.whl"):
            try:
                o_name, o_version, o_build, o_tags = parse_wheel_filename(other.name)
            except ValueError:
                continue
            if (o_name, o_version, o_tags) == (name, version, tags) and o_build and \
                    o_build != build and o_build[1] == record["label"]:
                others.append((o_build[0], other))
        for number, other in sorted(others, reverse=True)[:3]:
            stamp = restamp(record, build_tag=build_tag(number, str(record["label"])))
            candidate = stamp_wheel(built, scratch / f"try-{number}", stamp)
            if sha256_file(candidate) == self.file_sha(manifest, other):
                return candidate
        return None

    def save(self, manifest: dict[str, Any]) -> bool:
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        return write_if_changed(self.manifest_path, text.encode("utf-8"))

    def file_sha(self, manifest: dict[str, Any], path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        known = manifest["files"].get(rel)
        if known and known.get("size") == path.stat().st_size:
            return str(known["sha256"])
        return sha256_file(path)

    # --- pages --------------------------------------------------------------------------------

    def write_indexes(self, manifest: dict[str, Any],
                      labels: Iterable[str] | None = None) -> list[Path]:
        """The pages of these ABI folders (default: all), the pages over every ABI and the top
        page, from the wheels that are there (pages.py); returns the pages whose content
        changed. The manifest's file facts are brought up to date on the way."""
        files: dict[str, dict[str, Any]] = manifest["files"]
        for rel in [r for r in files if not (self.root / r).exists()]:
            del files[rel]
        facts: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for label in self.labels():
            facts[label] = []
            for wheel in sorted((self.root / label).glob("*.whl")):
                rel = f"{label}/{wheel.name}"
                known = files.get(rel)
                if not known or known.get("size") != wheel.stat().st_size:
                    known = files[rel] = {**(known or {}),
                                          **file_facts(wheel, sha256_file(wheel))}
                facts[label].append((wheel.name, known))
        return write_pages(self.root, facts, labels)


def file_facts(wheel: Path, digest: str) -> dict[str, Any]:
    from abistamp.core.stamp import metadata_fields, read_wheel

    found = metadata_fields(read_wheel(wheel).metadata, "Requires-Python")
    return {"sha256": digest, "size": wheel.stat().st_size,
            "requires_python": found[-1] if found else None}


def bump_build_number(built: Path, folder: Path, record: dict[str, Any], scratch: Path) -> Path:
    """Re-stamp `built` with the next free build number for its name, version and tags."""
    from abistamp.core.labels import build_tag
    from abistamp.core.record import restamp
    from abistamp.core.stamp import stamp_wheel

    name, version, build, tags = parse_wheel_filename(built.name)
    label = str(record["label"])
    if not build:
        raise AbistampError(
            f"`{folder.name}/{built.name}` already exists with other bytes, and the wheel has no "
            "build tag whose number could change",
            "turn `build-tag` back on (`-C abistamp.build-tag=true`), or move the old wheel away "
            "if no lock file or cache names it")
    numbers = [build[0]]
    for other in folder.glob("*.whl"):
        try:
            o_name, o_version, o_build, o_tags = parse_wheel_filename(other.name)
        except ValueError:
            continue
        if (o_name, o_version, o_tags) == (name, version, tags) and o_build:
            numbers.append(o_build[0])
    stamp = restamp(record, build_tag=build_tag(max(numbers) + 1, label))
    scratch.mkdir(parents=True, exist_ok=True)
    return stamp_wheel(built, scratch, stamp)


def wheel_identity(filename: str) -> tuple[Any, ...]:
    """What installers tell wheels apart by: the normalised name, version, build and tags."""
    return tuple(parse_wheel_filename(filename))


def same_wheel_in(folder: Path, filename: str) -> Path | None:
    """The wheel in folder that installers would take for `filename`, however it is spelt."""
    exact = folder / filename
    if exact.exists():
        return exact
    identity = wheel_identity(filename)
    for other in folder.glob("*.whl"):
        try:
            if wheel_identity(other.name) == identity:
                return other
        except ValueError:
            continue
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def place_file(src: Path, target: Path) -> None:
    """Copy (or hard-link, on one filesystem) src to target, appearing there whole or not at all."""
    with replacing(target) as tmp:
        try:
            os.unlink(tmp)
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
