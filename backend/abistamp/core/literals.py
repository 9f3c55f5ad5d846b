"""Top-level `NAME = <literal>` assignments of a Python file, read without running it: torch's
`version.py`, DeepSpeed's `git_version_info_installed.py`, setuptools' editable finders."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any


def read_constants(source: str, filename: str = "<unknown>") -> dict[str, Any]:
    """The literal values assigned at module level; other assignments are left out. Raises
    SyntaxError when the source is no Python."""
    values: dict[str, Any] = {}
    for node in ast.parse(source, filename).body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                try:
                    values[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError, SyntaxError):
                    pass
    return values


def read_module_constants(path: Path) -> dict[str, Any]:
    """read_constants of a file; {} when it cannot be read or parsed."""
    try:
        return read_constants(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
