"""Finish an sdist the wrapped backend wrote, so that a wheel can be built from it.

Two things can be missing: the in-tree backend folder (`build-system.backend-path`; uv refuses
to build from an sdist without it) and, for projects whose dependencies come from setup.py,
`Dynamic: Requires-Dist` in PKG-INFO (PEP 643: without it, a wheel built from the sdist may not
add the torch pin).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

from .settings import read_pyproject


def finish(src: Path, out_dir: Path, project: Path, *, mark_requires_dynamic: bool) -> Path:
    target = out_dir / src.name
    with tarfile.open(src, "r:gz") as tar:
        members = tar.getmembers()
        top = members[0].name.split("/", 1)[0] if members else src.name[: -len(".tar.gz")]
        names = {m.name for m in members}
        missing = [(f"{top}/{rel}", project / rel) for rel in backend_path_files(project)
                   if f"{top}/{rel}" not in names]
        pkg_info_name = f"{top}/PKG-INFO"
        pkg_info = None
        if mark_requires_dynamic and pkg_info_name in names:
            extracted = tar.extractfile(pkg_info_name)
            old = extracted.read() if extracted else b""
            new = mark_dynamic(old, "Requires-Dist")
            pkg_info = new if new != old else None
        if not missing and pkg_info is None:
            os.replace(src, target)
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
                mtime = members[0].mtime if members else 0
                for m in members:
                    if m.name == pkg_info_name and pkg_info is not None:
                        m.size = len(pkg_info)
                        out.addfile(m, io.BytesIO(pkg_info))
                    else:
                        out.addfile(m, tar.extractfile(m) if m.isfile() else None)
                for arcname, path in sorted(missing):
                    info = tarfile.TarInfo(arcname)
                    data = path.read_bytes()
                    info.size, info.mtime, info.mode = len(data), mtime, 0o644
                    out.addfile(info, io.BytesIO(data))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return target


def backend_path_files(project: Path) -> list[str]:
    """Files under `build-system.backend-path` folders, relative to the project, sorted."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return []
    paths = read_pyproject(pyproject).get("build-system", {}).get("backend-path", [])
    files: list[str] = []
    root = project.resolve()
    for entry in paths:
        folder = (project / entry).resolve()
        if folder == root or root not in folder.parents or not folder.is_dir():
            continue  # the project root is in every sdist anyway; outside it cannot be packed
        for path in sorted(folder.rglob("*")):
            rel_parts = path.relative_to(folder).parts
            if (path.is_file() and "__pycache__" not in rel_parts and path.suffix != ".pyc"
                    and not any(p.endswith(".egg-info") for p in rel_parts)):
                files.append(path.relative_to(root).as_posix())
    return files


def mark_dynamic(pkg_info: bytes, field: str) -> bytes:
    """Add `Dynamic: field` to PKG-INFO when its metadata version knows Dynamic (>= 2.2)."""
    text = pkg_info.decode("utf-8")
    head, sep, body = text.partition("\n\n")
    tail = sep + body if sep else "\n"
    lines = head.rstrip("\n").split("\n")
    version = next((ln.split(":", 1)[1].strip() for ln in lines
                    if ln.lower().startswith("metadata-version:")), "1.0")
    if tuple(int(x) for x in version.split(".")[:2]) < (2, 2):
        return pkg_info
    if any(ln.lower().startswith("dynamic:") and ln.split(":", 1)[1].strip().lower()
           == field.lower() for ln in lines):
        return pkg_info
    at = max((i for i, ln in enumerate(lines) if ln.lower().startswith("dynamic:")),
             default=next((i for i, ln in enumerate(lines) if ln.lower().startswith("version:")),
                          len(lines) - 1))
    lines.insert(at + 1, f"Dynamic: {field}")
    return ("\n".join(lines) + tail).encode("utf-8")
