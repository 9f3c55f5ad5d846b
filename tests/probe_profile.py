"""A second profile in one file: the probe project's (tests/data/probe).

Not imported by the tests themselves: test_profiles.py copies it into the vendored backend of a
probe checkout as `abistamp/core/profiles/probe.py`, and abistamp finds it there with no other
change. Like DeepSpeed's, it sets a variable for the build (the probe appends
`PROBE_BUILD_STRING` to its version) and checks what the project recorded of its build (the
torch in `probe/_built.py`) against the ABI the wheel is stamped with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError
from abistamp.core.facts import BuildFacts
from abistamp.core.literals import read_constants
from abistamp.core.profiles import Installed, installed_file
from abistamp.core.settings import Settings
from abistamp.core.stamp import WheelInfo

BUILT = "probe/_built.py"


class Probe:
    name = "probe"
    build_environ = ("PROBE_",)
    wheel_files = (BUILT,)

    def matches(self, project: Path) -> bool:
        return (project / "probe" / "__init__.py").is_file() and (project / "version.txt").is_file()

    def environ(self, project: Path, settings: Settings, abi: TorchABI,
                current: dict[str, str], facts: BuildFacts) -> dict[str, str]:
        return {} if "PROBE_BUILD_STRING" in current else {"PROBE_BUILD_STRING": ".post7"}

    def prepare(self, project: Path, settings: Settings, facts: BuildFacts
                ) -> Callable[[], None]:
        return lambda: None

    def verify(self, wheel: WheelInfo, abi: TorchABI, facts: BuildFacts) -> dict[str, Any]:
        found = self.finished_wheel(wheel, abi)
        if found is None:
            raise AbistampError(f"the probe wheel `{wheel.path.name}` has no `{BUILT}`",
                                "build it from the probe's source tree")
        return found

    def held_back_for_sdist(self, environ: dict[str, str]) -> list[str]:
        return []

    def finished_wheel(self, wheel: WheelInfo, abi: TorchABI) -> dict[str, Any] | None:
        own = self.own_record(wheel)
        if own is None:
            return None
        if own["torch"] != abi.torch_version:
            raise AbistampError(f"the probe recorded torch {own['torch']} in `{BUILT}` of "
                                f"`{wheel.path.name}`, not {abi.torch_version}",
                                "build it with the torch it is stamped with")
        return {"name": self.name, **own}

    def own_record(self, wheel: WheelInfo) -> dict[str, Any] | None:
        if BUILT not in wheel.files:
            return None
        values = read_constants(wheel.files[BUILT].decode("utf-8"), BUILT)
        return {"torch": values.get("TORCH"), "cuda": values.get("CUDA")}

    def describe(self, data: dict[str, Any], *, own: bool) -> str:
        return f"built with torch {data.get('torch')} (cuda {data.get('cuda')})"

    def installed(self, sites: list[Path], torch: TorchABI | None) -> Installed | None:
        built = installed_file(sites, "probe", "_built.py")
        if built is None:
            return None
        recorded = read_constants(built.read_text(encoding="utf-8"), str(built)).get("TORCH")
        problems = [] if torch is None or recorded == torch.torch_version else [
            f"the probe was built for torch {recorded}, installed torch is {torch.torch_version}"]
        return Installed(source="probe _built.py", location=built, built_for=f"torch {recorded}",
                         known=recorded is not None, problems=problems,
                         fix="build the probe again against the installed torch")


PROFILE = Probe()
