"""What each extra of `abistamp uv-config` routes to, read from a wheelhouse, and the checks that
refuse a configuration that would not install: an ABI folder's packages and wheels, the torch
they were built against (manifest and ABI records) and where that torch comes from (the
manifest, or `--torch-index`); a torch no index offers, a single index in which one extra could
get another's wheel, an index page that is missing or does not list a wheel. The TOML is
uvconfig.py's.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from abistamp.core.errors import AbistampError

from .pages import ALL_PAGE
from .wheelhouse import Wheelhouse

_EXTRA = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclasses.dataclass(frozen=True)
class Route:
    """One extra: the ABI folder it installs from, its packages and their torch."""

    extra: str
    label: str
    packages: dict[str, list[str]]  # canonical name -> wheel filenames in the ABI folder
    torch_version: str | None
    torch_index: tuple[str, str] | None  # (url, "flat" | "simple")
    entries: list[dict[str, Any]]
    # Why torch_index is None, for the error that asks for `--torch-index`.
    torch_unknown: str = ""
    accelerator: str = ""  # from the ABI records: `cpu`, `cu130`...


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


def parse_torch_indexes(values: list[str], extras: list[tuple[str, str]]
                        ) -> dict[str | None, tuple[str, str]]:
    """`--torch-index [EXTRA=]URL_OR_FOLDER` -> {extra or None (every extra): (url, kind)}.

    A URL is a PEP 503 index (as `https://download.pytorch.org/whl/cpu` is); a local folder of
    torch wheels (a path, or a `file://` URL of a folder) is a flat index.
    """
    known = {e for e, _ in extras}
    out: dict[str | None, tuple[str, str]] = {}
    for value in values:
        extra: str | None = None
        target = value
        head, sep, tail = value.partition("=")
        if sep and _EXTRA.match(str(canonicalize_name(head.strip()))) and "/" not in head:
            extra, target = str(canonicalize_name(head.strip())), tail.strip()
            if extra not in known:
                raise AbistampError(
                    f"`--torch-index {value}` names the extra `{extra}`, which no `--extra` "
                    "declares", "use one of: " + ", ".join(sorted(known)))
        if extra in out:
            raise AbistampError(
                f"`--torch-index` is given twice for "
                f"{f'the extra `{extra}`' if extra else 'every extra'}",
                "give one index per extra (`--torch-index cpu=URL --torch-index cu130=URL`) or "
                "one for all (`--torch-index URL`)")
        out[extra] = _torch_index_of(target, value)
    return out


def _torch_index_of(target: str, value: str) -> tuple[str, str]:
    if target.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(target).path))
    elif "://" in target:
        return (target, "simple")
    else:
        path = Path(target)
    if not path.is_dir():
        raise AbistampError(
            f"`--torch-index {value}`: `{target}` is neither a URL nor a folder",
            "give a PEP 503 index URL (such as https://download.pytorch.org/whl/cpu) or a "
            "folder of torch wheels")
    return (path.resolve().as_uri(), "flat")


def plan_routes(wheelhouse: Wheelhouse, extras: list[tuple[str, str]],
                packages: list[str] | None,
                torch_indexes: dict[str | None, tuple[str, str]] | None = None) -> list[Route]:
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
        records = _records(folder, [f for fs in by_name.values() for f in fs])
        versions |= {str(r["torch"]) for r in records}
        accelerators = sorted({str(r.get("accelerator") or "") for r in records})
        torch_version = str(max(versions, key=Version)) if versions else None
        given = (torch_indexes or {})
        torch_index = given.get(extra) or given.get(None) or _torch_index(entries)
        unknown = ""
        if torch_index is None:
            if not wheelhouse.manifest_path.is_file():
                unknown = (f"`{wheelhouse.root}` has no `{wheelhouse.manifest_path.name}`: its "
                           "wheels were not put there by `abistamp build`")
            elif not entries:
                unknown = (f"no build in `{wheelhouse.manifest_path}` made the wheels of "
                           f"`{label}`: they were put there by hand, or stamped again")
            else:
                unknown = (f"`{wheelhouse.manifest_path}` records no torch index or find-links "
                           f"for `{label}`: built with `--python ENV`, or the folder it named "
                           "is gone")
        routes.append(Route(extra, label, by_name, torch_version, torch_index, entries,
                            unknown, accelerators[0] if len(accelerators) == 1 else ""))
    return routes


def _records(folder: Path, files: list[str]) -> list[dict[str, Any]]:
    """The ABI records of these wheels; refuses a wheel with no record, or one whose record
    names another ABI folder (as `abistamp index` does)."""
    from abistamp.core.stamp import read_wheel

    found = []
    for name in files:
        record = read_wheel(folder / name).abi_record
        if not record or not record.get("torch"):
            raise AbistampError(
                f"`{folder / name}` carries no abistamp ABI record, so the torch it needs is "
                "unknown",
                f"stamp it (`abistamp stamp {name} --python ENV -o DIR`, ENV having the torch it "
                "was built with) or build it through the abistamp backend, or move it out of "
                f"`{folder.name}/`")
        if str(record.get("label") or "") != folder.name:
            raise AbistampError(
                f"`{folder / name}` is in the ABI folder `{folder.name}` but its ABI record "
                f"says `{record.get('label')}`",
                f"move it to a `{record.get('label')}/` folder beside `{folder.name}/`: an "
                "extra routed to a folder gets every wheel in it")
        found.append(record)
    return found


def check_torch_known(routes: list[Route]) -> None:
    """Refuse to print extras that pin a torch no index of the configuration offers."""
    missing = [r for r in routes if r.torch_index is None]
    if not missing:
        return
    r = missing[0]
    # PyTorch's own index has a folder per accelerator (cpu, cu130, rocm6.4...).
    example = (f"https://download.pytorch.org/whl/{r.accelerator}"
               if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", r.accelerator) else "URL")
    raise AbistampError(
        f"where torch {r.torch_version} for the extra `{r.extra}` (`{r.label}`) comes from is "
        f"not known ({r.torch_unknown}), and without its index `uv lock` would not find "
        f"`torch=={r.torch_version}`",
        f"pass `--torch-index {r.extra}={example}` (a PEP 503 index, or a folder of torch "
        "wheels) for each extra, or `--torch-index URL` for all, or `--no-torch` to configure "
        "torch's index yourself")


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
    `torch==2.5.*` and `==2.5.1` both accept 2.5.1+cu121 and 2.5.1+cu124), and always when
    two ABI folders were built against the same torch (a label that tells apart something
    the pin cannot, such as the CPU instruction set): the fix named is the one for the cause.
    """
    for b in routes:
        if not b.torch_version:
            continue
        torch = Version(b.torch_version)
        for a in routes:
            if a.label == b.label:
                continue  # two extras routed to one folder get the same wheels anyway
            for files in a.packages.values():
                for fn in files:
                    pins = _torch_pins(wheelhouse.root / a.label / fn)
                    if all(p.specifier.contains(torch, prereleases=True) for p in pins):
                        shown = ", ".join(f"`{p}`" for p in pins) or "no torch pin"
                        raise AbistampError(
                            f"in one index extra `{b.extra}` (torch {b.torch_version}) could "
                            f"get `{a.label}/{fn}`: it has {shown}, which torch "
                            f"{b.torch_version} satisfies too",
                            _single_index_fix(a, b, pins))


def _single_index_fix(a: Route, b: Route, pins: list[Requirement]) -> str:
    routed = "route each extra to its ABI folder (leave out `--single-index`)"
    if not pins:
        return (f"stamp the wheels with a torch pin (`-C abistamp.pin=exact`), or {routed}")
    if a.torch_version and Version(a.torch_version) == Version(str(b.torch_version)):
        first, second = sorted((a.label, b.label))
        return (f"`{first}` and `{second}` were built against the same torch "
                f"{b.torch_version}, so no torch pin can tell them apart in one index: "
                f"{routed}")
    exact = all(len(p.specifier) == 1 and next(iter(p.specifier)).operator in ("==", "===")
                and "*" not in next(iter(p.specifier)).version for p in pins)
    if exact:
        # torch==2.14.1 (a torch without a local label) also accepts 2.14.1+cu130.
        return (f"the pin is exact already, but torch {a.torch_version} has no local label "
                f"for it to carry, so it accepts torch {b.torch_version} too: {routed}")
    return ("stamp the wheels with exact pins (`-C abistamp.pin=exact`: the pin then carries "
            f"torch's local label), or {routed}")


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


def check_pages(wheelhouse: Wheelhouse, routes: list[Route], fmt: str, base_url: str | None,
                single_index: bool) -> None:
    """Refuse an index URL whose page is missing or does not list a wheel it must offer.

    A local ABI folder is read as a flat index without any page (uv lists the folder); a
    PEP 503 index, the page over every ABI and anything served over HTTP need the pages that
    `abistamp build` and `abistamp index` write, which a folder filled by hand lacks.
    """
    import html

    needed: list[tuple[Path, str, str]] = []  # (page, wheel filename, why it is needed)
    for r in routes:
        for name, files in r.packages.items():
            for fn in files:
                if single_index:
                    page = (wheelhouse.root / "simple" / name / "index.html" if fmt == "simple"
                            else wheelhouse.root / ALL_PAGE)
                    needed.append((page, fn, "`--single-index` points at it"))
                elif fmt == "simple":
                    needed.append((wheelhouse.root / r.label / "simple" / name / "index.html",
                                   fn, "`--format simple` points at it"))
                elif base_url:
                    why = ("a folder served over HTTP is read through its index.html (static "
                           "servers list no folders)")
                    needed.append((wheelhouse.root / r.label / "index.html", fn, why))
    pages: dict[Path, str] = {}
    for page, fn, why in needed:
        if page not in pages:
            pages[page] = page.read_text(encoding="utf-8") if page.is_file() else ""
        if f">{html.escape(fn)}<" not in pages[page]:
            state = "does not list `" + fn + "`" if page.is_file() else "does not exist"
            raise AbistampError(
                f"`{page}` {state}, and {why}",
                f"write the wheelhouse's pages and manifest with `abistamp index "
                f"{wheelhouse.root} -o {wheelhouse.root}` (or `-o NEW` for a copy to publish, "
                "then pass NEW)")

