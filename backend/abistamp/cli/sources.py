"""What `abistamp build` builds from: a source tree, an sdist file or a pinned release, and its
content digest (part of each variant's key); copying a tree without its build outputs and
unpacking an sdist into a variant's private folder."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from abistamp.core.errors import AbistampError

from .variants import BuildFailed
from .wheelhouse import sha256_file

# Not part of a source tree's content: version control, build outputs, caches, environments.
_SKIP_TOP = frozenset({"build", "dist", ".eggs"})
_SKIP_ANY = frozenset({".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", "node_modules"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".o", ".obj", ".so", ".pyd", ".dylib", ".dll")
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip")


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "tree", "sdist" or "requirement"
    spec: str  # the absolute path, or the requirement as given
    path: Path | None  # the tree or sdist file; for a requirement, the sdist once fetched
    digest: str  # "sha256:..." of the content; "" for a requirement not fetched yet

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "spec": self.spec, "digest": self.digest}

    def key_part(self) -> dict[str, str]:
        # A requirement pins a release, whose sdist an index never changes: the key can be
        # known without fetching it, which keeps the skip check off the network.
        if self.kind == "requirement":
            return {"kind": self.kind, "spec": self.spec}
        return {"kind": self.kind, "digest": self.digest}


def resolve_source(text: str, skip: list[Path]) -> Source:
    path = Path(text).expanduser()
    if path.is_dir():
        if not ((path / "setup.py").is_file() or (path / "pyproject.toml").is_file()):
            raise AbistampError(f"SOURCE `{text}` is a folder with neither setup.py nor "
                                "pyproject.toml", "pass the root of a Python project")
        return Source("tree", str(path.resolve()), path.resolve(), tree_digest(path, skip))
    if path.is_file():
        if path.name.endswith(".whl"):
            raise AbistampError(f"SOURCE `{text}` is a wheel, which is already built",
                                "stamp it with `abistamp stamp`, or pass its sdist or tree")
        if not path.name.endswith(SDIST_SUFFIXES):
            raise AbistampError(f"SOURCE `{text}` is a file but not an sdist "
                                f"({', '.join(SDIST_SUFFIXES)})",
                                "pass a source tree, an sdist or `name==version`")
        return Source("sdist", str(path.resolve()), path.resolve(),
                      "sha256:" + sha256_file(path))
    try:
        req = Requirement(text)
    except InvalidRequirement:
        req = None
    specs = list(req.specifier) if req else []
    if (req is None or req.url or len(specs) != 1 or specs[0].operator not in ("==", "===")
            or specs[0].version.endswith(".*")):
        raise AbistampError(f"SOURCE `{text}` is neither a folder, an sdist file nor an exact "
                            "`name==version` requirement",
                            "pass a source tree, an sdist, or a pinned release such as "
                            "`deepspeed==0.19.8`")
    return Source("requirement", str(req), None, "")


def tree_digest(root: Path, skip: list[Path]) -> str:
    """A digest of a source tree's files (names and bytes), without build outputs.

    In a git checkout the commit goes in too: versions like DeepSpeed's `+<hash>` come from it.
    """
    h = hashlib.sha256()
    for rel, path in sorted(_tree_files(root, skip)):
        h.update(rel.encode() + b"\0")
        if path.is_symlink():
            h.update(b"L" + os.readlink(path).encode())
        else:
            h.update(hashlib.sha256(path.read_bytes()).digest())
    head = git_head(root)
    if head:
        h.update(b"git:" + head.encode())
    return "sha256:" + h.hexdigest()


def _tree_files(root: Path, skip: list[Path]) -> Iterator[tuple[str, Path]]:
    skip_set = {p.resolve() for p in skip}
    root = root.resolve()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            full = here / d
            if (_skip_dir(d, here == root) or full in skip_set
                    or (full / "pyvenv.cfg").is_file()):
                continue
            keep.append(d)
        dirs[:] = keep
        for f in files:
            if f.endswith(_SKIP_SUFFIXES) or (here == root and f == "pyvenv.cfg"):
                continue
            full = here / f
            yield full.relative_to(root).as_posix(), full


def _skip_dir(name: str, top: bool) -> bool:
    return name in _SKIP_ANY or name.endswith(".egg-info") or (top and name in _SKIP_TOP)


def git_head(root: Path) -> str | None:
    """The commit of a git checkout, read from .git without running git."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: `gitdir: PATH`
        text = git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.split(":", 1)[1].strip()).resolve()
    head_file = git / "HEAD"
    if not head_file.is_file():
        return None
    head = head_file.read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    for base in (git, _common_dir(git)):
        ref_file = base / ref
        if ref_file.is_file():
            return ref_file.read_text(encoding="utf-8").strip()
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    return head


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    if common.is_file():
        return (git / common.read_text(encoding="utf-8").strip()).resolve()
    return git


def copy_tree(src: Path, dest: Path, skip: list[Path]) -> None:
    """Copy a source tree without its build outputs; `.git` becomes a link to the original."""
    for rel, path in _tree_files(src, skip):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        else:
            shutil.copy2(path, target)
    if (src / ".git").exists():
        # Versions read from git (`+<hash>`) must come out as in the checkout.
        os.symlink((src / ".git").resolve(), dest / ".git")


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack an sdist into dest and return its project folder (the one top-level folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                for name in zf.namelist():
                    from abistamp.core.stamp import check_member_name

                    check_member_name(name, sdist)
                zf.extractall(dest)
        else:
            with tarfile.open(sdist) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(dest)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise BuildFailed(f"`{sdist.name}` cannot be unpacked: {e}") from None
    tops = [p for p in dest.iterdir()]
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return dest
