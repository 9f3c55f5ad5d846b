"""Project-specific support behind one small interface: profiles as plugins.

A profile is one module of this package that defines `PROFILE`, an object with the methods of
:class:`Profile`; :func:`all_profiles` finds every such module, so a new project's support is
one new file here (tests/probe_profile.py shows one). The backend calls the build methods
(`matches`, `environ`, `prepare`, `verify`); the command line calls the others, for wheels and
installs it did not build (`abistamp stamp`, `inspect`, `check`, the `build` cache key), and
never names a project itself. A profile never opens a wheel: it names the members it reads
(`wheel_files`), and gets them with the rest of what `stamp.read_wheel` reads in its one open.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..literals import read_module_constants

if TYPE_CHECKING:
    from ..abi import TorchABI
    from ..facts import BuildFacts
    from ..settings import Settings
    from ..stamp import WheelInfo


@dataclasses.dataclass(frozen=True)
class Installed:
    """What an installed project recorded of its own build (outside the ABI record), judged
    against the installed torch: one row of `abistamp check`."""

    source: str  # what was read, for people: `deepspeed torch_info`
    location: Path  # the file read
    built_for: str  # `torch 2.13 (cuda 0.0)`, or `unknown`
    known: bool  # whether the file said what it was built for
    problems: list[str]  # against the installed torch; empty when it matches
    fix: str  # what to do about problems
    version: str | None = None  # the project's version as the file says, if it does


class Profile(Protocol):
    name: str
    #: Prefixes of environment variables that change what this project's build makes: they
    #: are recorded, and part of `abistamp build`'s key of a variant.
    build_environ: tuple[str, ...]
    #: Members of a wheel that `verify`, `finished_wheel` and `own_record` read: the callers
    #: read them with the wheel's .dist-info (`read_wheel(path, wheel_files)`), into
    #: `WheelInfo.files`, those the wheel has.
    wheel_files: tuple[str, ...]

    # --- inside the build (the backend) ---------------------------------------------------

    def matches(self, project: Path) -> bool:
        """Whether this source tree is the profile's project."""

    def environ(self, project: Path, settings: Settings, abi: TorchABI,
                current: dict[str, str], facts: BuildFacts) -> dict[str, str]:
        """Environment variables to set for the build (never overriding the user's)."""

    def prepare(self, project: Path, settings: Settings, facts: BuildFacts
                ) -> Callable[[], None]:
        """Work inside the build process just before the wrapped backend runs; returns undo."""

    def verify(self, wheel: WheelInfo, abi: TorchABI, facts: BuildFacts) -> dict[str, Any]:
        """Check the built wheel against the ABI; return what goes into the ABI record."""

    def held_back_for_sdist(self, environ: dict[str, str]) -> list[str]:
        """Environment variables to unset while the sdist hooks run: build switches that make
        the project's build script demand a compiler setup an sdist never uses."""

    # --- outside any build (the command line) ---------------------------------------------

    def finished_wheel(self, wheel: WheelInfo, abi: TorchABI) -> dict[str, Any] | None:
        """`abistamp stamp`: the record's profile object for a wheel built without abistamp,
        checked against `abi` as `verify` would; None when the wheel is not this project's."""

    def own_record(self, wheel: WheelInfo) -> dict[str, Any] | None:
        """`abistamp inspect` of a wheel whose ABI record has no profile object: what the
        project recorded of its build itself (JSON-ready), or None."""

    def describe(self, data: dict[str, Any], *, own: bool) -> str:
        """One line for `abistamp inspect`: of the record's profile object, or (own) of what
        `own_record` returned."""

    def installed(self, sites: list[Path], torch: TorchABI | None) -> Installed | None:
        """`abistamp check`: what the installed project recorded of its build, against the
        installed torch (None: not installed); read from files, without importing anything."""


def all_profiles() -> list[Profile]:
    """Every profile: the `PROFILE` of each module of this package, by module name."""
    found = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        profile = getattr(importlib.import_module(f"{__name__}.{module}"), "PROFILE", None)
        if profile is not None:
            found.append(profile)
    return found


def wheel_files(profiles: list[Profile]) -> tuple[str, ...]:
    """The wheel members these profiles read, for `read_wheel` to read."""
    return tuple(f for p in profiles for f in p.wheel_files)


def select_profile(setting: str, project: Path) -> Profile | None:
    if setting == "none":
        return None
    profiles = all_profiles()
    if setting != "auto":
        return next(p for p in profiles if p.name == setting)
    return next((p for p in profiles if p.matches(project)), None)


def by_name(name: Any) -> Profile | None:
    return next((p for p in all_profiles() if p.name == name), None)


def installed_file(sites: list[Path], package: str, rel: str) -> Path | None:
    """A file of an installed package (`rel` inside it): in site-packages, or where an editable
    install points (setuptools' editable finders, or path entries of .pth files)."""
    for site in sites:
        direct = site / package / rel
        if direct.is_file():
            return direct
    for site in sites:
        for finder in sorted(site.glob("__editable___*_finder.py")):
            mapping = read_module_constants(finder).get("MAPPING")
            if isinstance(mapping, dict) and isinstance(mapping.get(package), str):
                candidate = Path(mapping[package]) / rel
                if candidate.is_file():
                    return candidate
        for pth in sorted(site.glob("*.pth")):
            try:
                lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import")):
                    candidate = Path(line) / package / rel
                    if candidate.is_file():
                        return candidate
    return None
