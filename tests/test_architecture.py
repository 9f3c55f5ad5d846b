"""The two runtimes stay apart (docs/architecture.md).

`abistamp.backend` and `abistamp.core` run inside every build environment, where only the
backend's own dependencies are installed (setuptools, packaging, tomli on 3.10) and where a
vendored copy of `backend/` may be all there is. Nothing they import, at module level or inside
a function, may reach the command line (`abistamp.cli`) or a library only the `cli` extra
brings. torch is allowed: the build imports the torch it compiles against, inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "backend" / "abistamp"
BACKEND_SIDE = [PACKAGE / "__init__.py", PACKAGE / "backend.py",
                *sorted((PACKAGE / "core").rglob("*.py"))]
# What a build environment may have: the standard library and the backend's dependencies.
ALLOWED_THIRD_PARTY = {"setuptools", "packaging", "tomli", "torch"}


def imports_of(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """Every import in a module, absolute or relative, as (line, absolute module name); `text`
    stands in for the file's contents."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            found += [(node.lineno, name) for name in names]
    return found


@pytest.mark.parametrize("path", BACKEND_SIDE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_backend_side_never_imports_the_command_line(path: Path) -> None:
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for line, name in imports_of(path):
        top = name.split(".")[0]
        if top == "abistamp":
            if name == "abistamp.cli" or name.startswith("abistamp.cli."):
                wrong.append(f"line {line}: {name} (the command line)")
        elif top not in stdlib and top not in ALLOWED_THIRD_PARTY and top != "__future__":
            wrong.append(f"line {line}: {name} (not a dependency of the backend)")
    assert not wrong, f"{path.relative_to(PACKAGE)} imports " + "; ".join(wrong)


def test_the_scan_sees_relative_imports_of_the_command_line() -> None:
    """Negative control: `from ..cli...` written in core/profiles/ resolves to what it names."""
    where = PACKAGE / "core" / "profiles" / "example.py"
    names = [name for _, name in imports_of(where, "from ...cli.build import Matrix\n"
                                                   "from ... import cli\nimport uv\n")]
    assert names == ["abistamp.cli.build", "abistamp.cli", "uv"], names


def test_a_build_loads_no_command_line_module(tmp_path: Path) -> None:
    """At run time too: importing the backend and its core modules loads nothing of the CLI."""
    code = ("import sys, importlib, pkgutil, abistamp.backend, abistamp.core\n"
            "for m in pkgutil.walk_packages(abistamp.core.__path__, 'abistamp.core.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(n for n in sys.modules if n == 'abistamp.cli' or "
            "n.startswith('abistamp.cli.') or n.split('.')[0] in ('uv', 'pyproject_hooks', "
            "'unearth', 'auditwheel'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_module_map_in_the_docs_matches_the_tree() -> None:
    """docs/architecture.md names every module of the package, and no module that is gone."""
    import re

    docs = (PACKAGE.parent.parent / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([a-z_]+\.py)`", docs)) | set(re.findall(r"`([a-z_]+)/`", docs))
    tree = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    tree |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    tree |= {p.name for p in (PACKAGE / "core").iterdir() if (p / "__init__.py").is_file()}
    assert tree <= named, f"not in docs/architecture.md: {sorted(tree - named)}"
    gone = {n for n in named if n.endswith(".py") and n not in tree
            and n != "__init__.py" and not n.startswith(("test_", "probe_"))}
    assert not gone, f"docs/architecture.md names modules that do not exist: {sorted(gone)}"
