"""Turn a wheel plus an ABI stamp into a stamped wheel: what to stamp (the policy, `make_stamp`)
and the rewrite of `.dist-info` (`stamp_wheel`); the raw member copy is core/zipcopy.py.

Only `.dist-info` changes (METADATA, WHEEL, RECORD, the new `abistamp.json`), and the
`.dist-info`/`.data` folders are renamed when the version changes. Every other member's
compressed bytes are copied as they are, with ``os.copy_file_range`` where the kernel has it:
nothing is decompressed or compressed again, so the cost is close to a file copy and memory
does not grow with the wheel. RECORD lines of copied members stay valid. The new wheel is
written to a temporary file beside the target and renamed into place, so a reader never sees a
partial wheel.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import os
import re
import time
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .errors import AbistampError
from .labels import build_tag, render_label, stamped_version
from .record import (
    RECORD_NAME,
    Record,
    Stamp,
    build_fields,
    from_json,
    to_json,
    wheel_fields,
)
from .zipcopy import RawZipWriter, atomic_output

if TYPE_CHECKING:
    from .abi import TorchABI
    from .settings import Settings


@dataclasses.dataclass(frozen=True)
class WheelInfo:
    """What stamping needs to know of an existing wheel, read in one open of it (`read_wheel`):
    a build opens its wheel once for this and once for the copy (`stamp_wheel`)."""

    path: Path
    name: str  # as written in the filename: `deepspeed`
    version: str
    build_tag: str | None
    tags: str  # `cp311-cp311-linux_x86_64`
    dist_info: str  # `deepspeed-0.19.8.dist-info`
    metadata: bytes
    wheel: bytes
    record: bytes
    abi_record: Record | None
    members: tuple[zipfile.ZipInfo, ...]  # the central directory, for the copy
    files: Mapping[str, bytes]  # of the members read_wheel was asked for, those the wheel has


def read_wheel(path: Path, files: Iterable[str] = ()) -> WheelInfo:
    """Open a wheel and read its .dist-info, and the members named in `files` that it has (what
    a profile reads: `Profile.wheel_files`). Raises AbistampError on anything malformed."""
    name, version, build, tags = split_wheel_filename(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = tuple(zf.infolist())
            names = [m.filename for m in members]
            for n in names:
                check_member_name(n, path)
            candidates = sorted({n.split("/", 1)[0] for n in names
                                 if n.split("/", 1)[0].endswith(".dist-info") and "/" in n})
            if len(candidates) != 1:
                raise AbistampError(f"`{path.name}` has {len(candidates)} .dist-info folders "
                                    f"({', '.join(candidates) or 'none'}), not one",
                                    "rebuild the wheel with a standard backend")
            dist_info = candidates[0]

            def member(rel: str) -> bytes:
                try:
                    return zf.read(f"{dist_info}/{rel}")
                except KeyError:
                    raise AbistampError(f"`{path.name}` has no `{dist_info}/{rel}`",
                                        "rebuild the wheel with a standard backend") from None

            metadata, wheel, record = member("METADATA"), member("WHEEL"), member("RECORD")
            abi_record = None
            if f"{dist_info}/{RECORD_NAME}" in names:
                abi_record = from_json(member(RECORD_NAME),
                                       f"`{path.name}`'s `{dist_info}/{RECORD_NAME}`")
            present = set(names)
            found = {f: zf.read(f) for f in files if f in present}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise AbistampError(f"`{path}` does not exist", "check the path") from None
        raise AbistampError(f"`{path.name}` is not a readable wheel: {e}",
                            "the file is corrupt or truncated; build or download it again") from None
    return WheelInfo(path, name, version, build, tags, dist_info, metadata, wheel, record,
                     abi_record, members, found)


def wheel_info(wheel: Path | WheelInfo) -> WheelInfo:
    """What read_wheel reads of a wheel, unless the caller has read it already."""
    return wheel if isinstance(wheel, WheelInfo) else read_wheel(wheel)


def split_wheel_filename(path: Path) -> tuple[str, str, str | None, str]:
    """The filename's own spelling of name, version, build tag and tags (packaging's parse
    normalises them; the stamped wheel keeps the project's spelling)."""
    try:
        parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise AbistampError(f"`{path.name}` is not a wheel filename: {e}",
                            "give a `.whl` file named as PEP 427 says") from None
    # Valid by now: exactly 5 or 6 dash-separated fields, the last three the tags.
    name, version, *build, py, abi, plat = path.name[:-4].split("-")
    return name, version, build[0] if build else None, f"{py}-{abi}-{plat}"


def check_member_name(name: str, wheel: Path) -> None:
    """Refuse members that would land outside the install root."""
    # Backslashes count as separators too: on Windows `pkg\\..\\..\\x` escapes as well.
    p = PurePosixPath(name.replace("\\", "/"))
    if not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        raise AbistampError(f"`{wheel.name}` holds the member `{name}`, whose path escapes the "
                            "install root", "do not install this wheel; rebuild it from source")


def wheel_filename(name: str, version: str, build_tag: str | None, tags: str) -> str:
    fn = f"{name}-{version}{'-' + build_tag if build_tag else ''}-{tags}.whl"
    parse_wheel_filename(fn)  # let packaging object to anything we got wrong
    return fn


def stamp_wheel(wheel: Path | WheelInfo, out_dir: Path, stamp: Stamp,
                source_date_epoch: int | None = None) -> Path:
    """Write the stamped wheel into out_dir (atomically) and return its path.

    Given what read_wheel read of the wheel, the copy is its only other open of it.
    """
    info = wheel_info(wheel)
    src = info.path
    previous = info.abi_record or {}
    base_version = previous.get("original_version", info.version)
    version = stamp.version or base_version
    dist_name = info.dist_info[: -len(".dist-info")].rsplit("-", 1)[0]
    new_dist_info = f"{dist_name}-{version}.dist-info"
    old_data, new_data = info.dist_info[:-len("dist-info")] + "data", f"{dist_name}-{version}.data"

    record = {**stamp.record, **wheel_fields(
        name=dist_name, version=version, original_version=base_version,
        build_tag=stamp.build_tag, tags=info.tags, requires=stamp.requires)}
    drop_requires = tuple(previous.get("requires", ()))
    metadata = edit_metadata(info.metadata, version, stamp.requires, drop_requires)
    wheel_file = edit_wheel_file(info.wheel, stamp.build_tag)
    abi_json = to_json(record, f"the ABI record for `{src.name}`")

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel_filename(info.name, version, stamp.build_tag, info.tags)
    old_record = {row[0]: row for row in csv.reader(io.StringIO(info.record.decode()))
                  if row}
    replaced = {f"{info.dist_info}/{n}" for n in ("METADATA", "WHEEL", "RECORD", RECORD_NAME)}

    def rename(n: str) -> str:
        head, sep, rest = n.partition("/")
        if head == info.dist_info:
            return f"{new_dist_info}/{rest}"
        if head == old_data and sep:
            return f"{new_data}/{rest}"
        return n

    # Of two entries with one name, a zip reader finds the last (ZipFile.getinfo).
    meta_info = next(m for m in reversed(info.members)
                     if m.filename == f"{info.dist_info}/METADATA")
    when = _new_entry_time(source_date_epoch, meta_info.date_time)
    with atomic_output(target) as fd, open(src, "rb") as src_f:
        out = RawZipWriter(fd)
        rows: list[list[str]] = []
        for m in info.members:
            if m.filename in replaced or m.is_dir():
                continue
            new_name = rename(m.filename)
            try:
                out.copy_member(src_f.fileno(), m, new_name)
            except AbistampError as e:  # say which wheel: `stamp` and `repair` take many
                raise AbistampError(f"`{src}`: {e.problem}", e.fix) from None
            row = old_record.get(m.filename)
            if row is None or len(row) < 3 or not row[1]:
                raise AbistampError(f"`{src.name}`: RECORD has no hash for `{m.filename}`",
                                    "rebuild the wheel with a standard backend")
            rows.append([new_name, row[1], row[2]])
        for rel, data in sorted({"METADATA": metadata, "WHEEL": wheel_file,
                                 RECORD_NAME: abi_json}.items()):
            name = f"{new_dist_info}/{rel}"
            out.add_bytes(name, data, when)
            rows.append([name, _record_hash(data), str(len(data))])
        record_name = f"{new_dist_info}/RECORD"
        rows.append([record_name, "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        out.add_bytes(record_name, buf.getvalue().encode(), when)
        out.finish()
    return target


def label_for(settings: Settings, abi: TorchABI) -> str:
    return render_label(settings.label, abi, settings.origin("label"))


def make_stamp(settings: Settings, abi: TorchABI, wheel: Path | WheelInfo, *,
               apply_label: bool, reason: str, pin: str | None,
               build_facts: dict[str, Any]) -> Stamp:
    """What to stamp into one wheel, for the backend and for `abistamp stamp` alike.

    The callers decide the two things that depend on how the wheel came about (whether the
    local label may go into the version, and whether a pin may be added); everything else
    (label, build tag, record fields) is decided here, so the two paths can't drift apart.
    build_facts holds what only a build knows (ninja, CUDA, ...). `wheel` is the wheel's path,
    or what read_wheel read of it.
    """
    label = label_for(settings, abi)
    info = wheel_info(wheel)
    base = (info.abi_record or {}).get("original_version", info.version)
    record = build_fields(abi, label=label, apply_label=apply_label, reason=reason, pin=pin,
                          facts=build_facts)
    if settings.build_tag:
        tag: str | None = build_tag(settings.build_number, label, settings.origin("label"))
    else:
        # Off means abistamp adds none; a tag the wrapped backend gave the wheel is its own.
        ours = (info.abi_record or {}).get("build_tag")
        tag = info.build_tag if info.build_tag != ours else None
    return Stamp(
        version=stamped_version(base, label) if apply_label else None,
        build_tag=tag,
        requires=(pin,) if pin else (),
        record=record,
    )


def metadata_fields(data: bytes, name: str) -> list[str]:
    """Every value of one header field of METADATA or PKG-INFO (`Requires-Dist`), read by the
    standard library's email parser: any line ending, folded lines, names in any case."""
    from email.parser import HeaderParser

    values = HeaderParser().parsestr(data.decode("utf-8", "replace")).get_all(name) or []
    return [str(v).strip() for v in values]


def edit_metadata(data: bytes, version: str, add: tuple[str, ...],
                  drop: tuple[str, ...] = ()) -> bytes:
    """Set `Version:` and add `Requires-Dist:` lines in METADATA's headers; keep the body.

    The headers end at the first empty line, whatever the line endings (a METADATA written
    on Windows, or by hand, has CRLF): a `Version:` or `Requires-Dist:` line in the
    description is text, never touched.
    """
    text = data.decode("utf-8")
    end = re.search(r"\r?\n\r?\n", text)
    head, tail = (text[:end.start()], text[end.start():]) if end else (text, "")
    newline = "\r\n" if "\r\n" in (end.group() if end else head) else "\n"
    lines = head.splitlines()
    out: list[str] = []
    last_requires = -1
    for line in lines:
        if line.startswith("Version:"):
            line = f"Version: {version}"
        if line.startswith("Requires-Dist:"):
            if line.split(":", 1)[1].strip() in drop:
                continue
            last_requires = len(out)
        out.append(line)
    new = [f"Requires-Dist: {r}" for r in add if f"Requires-Dist: {r}" not in out]
    at = last_requires + 1 if last_requires >= 0 else len(out)
    out[at:at] = new
    return (newline.join(out) + (tail or newline)).encode("utf-8")


def edit_wheel_file(data: bytes, build_tag: str | None) -> bytes:
    lines = [ln for ln in data.decode("utf-8").splitlines() if not ln.startswith("Build:")]
    while lines and not lines[-1].strip():
        lines.pop()
    if build_tag:
        lines.append(f"Build: {build_tag}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _new_entry_time(epoch: int | None, fallback: tuple[int, ...]) -> tuple[int, ...]:
    if epoch is None:
        env = os.environ.get("SOURCE_DATE_EPOCH")
        epoch = int(env) if env and env.strip().isdigit() else None
    if epoch is None:
        return fallback
    return time.gmtime(max(epoch, 315532800))[:6]  # the zip format starts in 1980
