"""A wheelhouse's index pages, written from the wheels each ABI folder holds: per folder a flat
page (pip `--find-links`, uv `format = "flat"`) and a PEP 503 index, over every ABI the flat
`all.html` and the PEP 503 `simple/`, and the top page for people. A page is rewritten only
when its content changes (`write_if_changed`): adding one ABI leaves the other folders' pages,
inode and mtime, as they were.
"""

from __future__ import annotations

import html
import shutil
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from abistamp.core.atomic import write_if_changed

ALL_PAGE = "all.html"  # the flat page over every ABI folder


def write_pages(root: Path, facts: dict[str, list[tuple[str, dict[str, Any]]]],
                labels: Iterable[str] | None = None) -> list[Path]:
    """The pages of these ABI folders (default: all), the pages over every ABI and the top
    page; `facts` holds every ABI folder's wheels, (filename, file facts) each. Returns the
    pages whose content changed."""
    every = list(facts)
    written: list[Path] = []

    def put(path: Path, title: str, lines: list[str]) -> None:
        if write_if_changed(path, _page(title, lines)):
            written.append(path)

    for label in every if labels is None else [lb for lb in labels if lb in facts]:
        folder = root / label
        put(folder / "index.html", f"abistamp wheelhouse: {label}",
            [_link(name, name, f) for name, f in facts[label]])
        written += _write_simple(folder / "simple",
                                 [("../" + name, name, f) for name, f in facts[label]])
    # Over every ABI: the one index that `uv-config --single-index` points at.
    combined = sorted((name, f"{label}/{name}", f) for label in every
                      for name, f in facts[label])
    written += _write_simple(root / "simple",
                             [("../" + rel, name, f) for name, rel, f in combined])
    put(root / ALL_PAGE, "abistamp wheelhouse: every ABI",
        [_link(rel, name, f) for name, rel, f in combined])
    top = [f'<a href="{html.escape(lbl)}/">{html.escape(lbl)}</a><br>' for lbl in every]
    top += [f'<a href="{ALL_PAGE}">every wheel of every ABI (flat)</a><br>',
            '<a href="simple/">PEP 503 index of every ABI</a><br>']
    put(root / "index.html", "abistamp wheelhouse", top)
    return written


def _write_simple(root: Path, items: list[tuple[str, str, dict[str, Any]]]) -> list[Path]:
    """A PEP 503 index at root over (href relative to root, filename, facts); returns the pages
    written. Project pages of projects no longer there are removed."""
    projects: dict[str, list[str]] = {}
    for href, name, f in items:
        # A project page is one folder below root: its links go one level further up.
        projects.setdefault(str(parse_wheel_filename(name)[0]), []).append(
            _link("../" + href, name, f))
    written = []
    for project, links in sorted(projects.items()):
        if write_if_changed(root / project / "index.html", _page(f"Links for {project}", links)):
            written.append(root / project / "index.html")
    for stale in root.glob("*/index.html") if root.is_dir() else []:
        if stale.parent.name not in projects:
            shutil.rmtree(stale.parent, ignore_errors=True)
    root_links = [f'<a href="{p}/">{p}</a>' for p in sorted(projects)]
    if write_if_changed(root / "index.html", _page("Simple index", root_links)):
        written.append(root / "index.html")
    return written


def _link(href: str, text: str, facts: dict[str, Any]) -> str:
    quoted = urllib.parse.quote(href, safe="/.")
    attrs = ""
    if facts.get("requires_python"):
        attrs = f' data-requires-python="{html.escape(facts["requires_python"])}"'
    return (f'<a href="{quoted}#sha256={facts["sha256"]}"{attrs}>{html.escape(text)}</a><br>')


def _page(title: str, lines: list[str]) -> bytes:
    body = "\n".join(lines)
    return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
            f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n<body>\n{body}\n"
            "</body></html>\n").encode()
