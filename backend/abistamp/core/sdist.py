"""Finish an sdist the wrapped backend wrote, so that a wheel can be built from it.

The in-tree backend folder (`build-system.backend-path`) can be missing: uv refuses to build a
wheel from an sdist without it.

PKG-INFO is deliberately left as the wrapped backend wrote it. Marking `Dynamic: Requires-Dist`
would let wheels built from the sdist carry the torch pin (PEP 643), but uv's `match-runtime`,
the setting that gives each torch its own source build, refuses packages without static
metadata ("does not declare static metadata, making runtime-matching impossible").
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic import replacing


def finish(src: Path, out_dir: Path, project: Path, pyproject: Mapping[str, Any]) -> Path:
    """Move the sdist `src` into out_dir, adding the backend-path files it lacks; `pyproject`
    is the project's pyproject.toml, parsed."""
    target = out_dir / src.name
    with tarfile.open(src, "r:gz") as tar:
        members = tar.getmembers()
        top = members[0].name.split("/", 1)[0] if members else src.name[: -len(".tar.gz")]
        names = {m.name for m in members}
        missing = [(f"{top}/{rel}", project / rel) for rel in backend_path_files(project, pyproject)
                   if f"{top}/{rel}" not in names]
        if not missing:
            os.replace(src, target)
            return target
        with replacing(target) as tmp, open(tmp, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
            mtime = members[0].mtime if members else 0
            for m in members:
                out.addfile(m, tar.extractfile(m) if m.isfile() else None)
            for arcname, path in sorted(missing):
                info = tarfile.TarInfo(arcname)
                data = path.read_bytes()
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                out.addfile(info, io.BytesIO(data))
    return target


def backend_path_files(project: Path, pyproject: Mapping[str, Any]) -> list[str]:
    """Files under `build-system.backend-path` folders, relative to the project, sorted."""
    paths = pyproject.get("build-system", {}).get("backend-path", [])
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
