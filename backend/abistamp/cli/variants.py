"""What one `abistamp build` run is made of: its plan (the source, the wheelhouse, where torch
comes from), its variants, each variant's key (what decides whether it is already built) and
each variant's outcome (a failure's one line, read from its log)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from abistamp.core.errors import AbistampError

from .wheelhouse import Wheelhouse

if TYPE_CHECKING:
    from .sources import Source

#: Environment variables that change what a build produces: recorded, and part of the key;
#: each profile adds its project's (`Profile.build_environ`).
BUILD_ENV_PREFIXES = ("ABISTAMP_",)
BUILD_ENV_NAMES = frozenset({
    "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH", "ROCM_HOME", "CC", "CXX", "CFLAGS",
    "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS",
    "SOURCE_DATE_EPOCH",
})


class BuildFailed(Exception):
    """One variant failed; the message is one line."""


def last_line(log: IO[str]) -> str:
    """The most telling line of a log, for a one-line summary: the first compiler error, else
    the last `error:` line with its `cause:`/`hint:` continuation (uv), else the last line."""
    log.flush()
    try:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read()[-20000:].splitlines() if ln.strip()]
    except OSError:
        return "see the log"
    for line in lines:
        if _COMPILER_ERROR.search(line):
            return line.strip()[:400]
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].strip()
        if text.lower().startswith(("error", "abistamp: error")):
            more = [ln.strip() for ln in lines[i + 1:i + 4] if ln.startswith((" ", "\t"))]
            return " ".join([text, *more])[:400]
    return lines[-1].strip()[:400] if lines else "no output"


_COMPILER_ERROR = re.compile(r":\d+:(\d+:)? (fatal )?error:")


class Cancelled(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Variant:
    torch: str | None  # a torch requirement, or None to use the environment's own torch
    python: Path  # the interpreter new environments are made from, or the existing one

    @property
    def existing(self) -> bool:
        return self.torch is None

    @property
    def name(self) -> str:
        return self.torch or f"--python {self.python}"


@dataclasses.dataclass
class Plan:
    source: Source
    wheelhouse: Wheelhouse
    variants: list[Variant]
    index_url: str | None = None
    extra_index_urls: list[str] = dataclasses.field(default_factory=list)
    find_links: list[str] = dataclasses.field(default_factory=list)
    config: dict[str, str | list[str]] = dataclasses.field(default_factory=dict)
    environ: dict[str, str] = dataclasses.field(default_factory=dict)  # --env and recorded
    rebuild: bool = False
    jobs: int = 1
    repair: str | None = None  # an auditwheel policy (or "auto") to repair each new wheel to
    cache_dir: Path | None = None  # fetched sdists (default: fetch.default_cache_dir())
    work_root: Path = dataclasses.field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"abistamp-{os.getuid()}")

    def torch_from(self) -> dict[str, Any]:
        return {"index_url": self.index_url, "extra_index_urls": list(self.extra_index_urls),
                "find_links": list(self.find_links)}

    def index_args(self) -> list[str]:
        args = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def recorded_environ(explicit: dict[str, str]) -> dict[str, str]:
    """The build environment variables that go into the key: ours by name, and --env."""
    from abistamp.core.profiles import all_profiles

    prefixes = BUILD_ENV_PREFIXES + tuple(p for profile in all_profiles()
                                          for p in profile.build_environ)
    found = {k: v for k, v in os.environ.items()
             if k.startswith(prefixes) or k in BUILD_ENV_NAMES}
    return dict(sorted({**found, **explicit}.items()))


def variant_key(plan: Plan, variant: Variant) -> tuple[str, dict[str, Any]]:
    from .envs import installed_torch, python_version

    fields: dict[str, Any] = {
        "source": plan.source.key_part(),
        "config": plan.config,
        "environ": plan.environ,
        "python": python_version(variant.python),
    }
    if plan.repair is not None:
        # A repaired wheel is another file than the plain one: not a skip of the other.
        fields["repair"] = plan.repair
    if variant.existing:
        torch = installed_torch(variant.python)
        if torch is None:
            raise AbistampError(f"`--python {variant.python}` has no torch installed",
                                "install torch there, or build with `--torch SPEC` instead")
        fields["torch"] = {"installed": torch.torch_version, "accelerator": torch.accelerator,
                           "environment": str(variant.python)}
    else:
        fields["torch"] = {"requirement": variant.torch, **plan.torch_from()}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), fields


@dataclasses.dataclass
class Outcome:
    variant: Variant
    status: str  # "built", "skipped", "failed" or "cancelled"
    note: str = ""
    entry: dict[str, Any] | None = None
    seconds: float = 0.0
    log: Path | None = None


Say = Callable[["Variant | None", str], None]
